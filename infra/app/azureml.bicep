// The Azure ML side, deployed in the workspace's resource group: the Event Grid system topic of
// the workspace (job state changes are published there; the subscription to the app's
// aml_job_events function is created after deploy by infra/hooks/postdeploy.*, once the function
// exists, since Event Grid validates the endpoint when a subscription is created) and the app
// identity's roles on the workspace.
//
// A resource has at most one system topic: if the workspace already has one, delete it or
// create the subscription on it by hand (docs/azure-setup.md).

param workspaceName string
param systemTopicName string
param identityPrincipalId string
param tags object

// Built-in roles: submit, read and cancel command jobs and register their environment
// (AzureML Data Scientist); create and resize the AmlCompute cluster, which Data Scientist
// may not (AzureML Compute Operator).
var azureMlDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
var azureMlComputeOperator = 'e503ece1-11d0-4e8e-8e2c-7a6c3bf38815'

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: workspace.location // a system topic lives in its source's region
  tags: tags
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource identityOnWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [azureMlDataScientist, azureMlComputeOperator]: {
    name: guid(workspace.id, identityPrincipalId, role)
    scope: workspace
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: identityPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

output systemTopicName string = topic.name
