// Data-plane roles on the app's storage account and Application Insights, as the official
// quickstart assigns them (infra/app/rbac.bicep there): the identity owns blobs (deployment
// package, Durable Functions leases and large messages) and contributes to queues (Durable
// Functions) and tables (Durable Functions history, the control plane's state table); it
// publishes metrics to Application Insights. The deploying user gets the same, to look at the
// state table and logs while checking a deployment.
// Storage Blob Data Owner also covers the artifacts (adapters/artifacts.py): creating their
// container and Get User Delegation Key (Microsoft.Storage/storageAccounts/blobServices/
// generateUserDelegationKey/action, part of the Blob Data Contributor and Owner roles,
// learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage), which signs the
// jobs' write-only upload SAS; the jobs themselves need no role on the account.

//
// The jobs' identity (the one the Azure ML cluster and the Batch pool run jobs with, which reads
// the model's credentials from Key Vault) is attached to that compute by the app's identity:
// assigning a user-assigned identity to a resource takes its
// Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action, i.e. Managed Identity
// Operator on that identity (and nothing on the vault).

param storageAccountName string
param applicationInsightsName string
param identityPrincipalId string
@description('Object id of the deploying user; empty: no user roles.')
param userPrincipalId string = ''
@description('Name of the jobs\' user-assigned identity; empty: none.')
param jobIdentityName string = ''

// Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var managedIdentityOperator = 'f1a07417-d97a-45cb-824c-7a7467783830'
var storageRoles = [storageBlobDataOwner, storageQueueDataContributor, storageTableDataContributor]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource jobIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = if (!empty(jobIdentityName)) {
  name: jobIdentityName
}

resource identityAssignsJobIdentity 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(jobIdentityName)) {
  name: guid(jobIdentity.id, identityPrincipalId, managedIdentityOperator)
  scope: jobIdentity
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', managedIdentityOperator)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource identityOnStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: {
    name: guid(storage.id, identityPrincipalId, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: identityPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource identityOnAppInsights 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userOnStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: if (!empty(userPrincipalId)) {
    name: guid(storage.id, userPrincipalId, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: userPrincipalId
      principalType: 'User'
    }
  }
]
