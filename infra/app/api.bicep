// The function app on a Flex Consumption plan, as the official quickstart builds it
// (Azure-Samples/durable-functions-quickstart-python-azd, infra/app/api.bicep): the AVM site
// module, the user-assigned identity for everything, the deployment package in a blob container
// reached with that identity, and host storage as an identity-based connection.

param name string
param location string
param tags object
param planId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param identityId string
param identityClientId string
@description('The control plane\'s own app settings (infra/main.bicep).')
param appSettings object
@description('URI of the Key Vault the jobs read the model\'s credentials from (and the heartbeat tokens).')
param modelSecretsVaultUrl string
@description('Key Vault secret holding the OpenAI key; empty: no OpenAI credentials.')
param openAiApiKeySecretName string = ''
@description('Key Vault secret holding the Azure OpenAI key; empty: no Azure OpenAI credentials.')
param azureApiKeySecretName string = ''
@description('The Azure OpenAI endpoint (not a secret), with azureApiKeySecretName.')
param azureOpenAiEndpoint string = ''
@description('Client id of the identity the Azure ML and Batch jobs read the vault with.')
param jobIdentityClientId string = ''
@description('Python of the worker; the project runs and is tested on 3.11 (README "Which Python").')
param runtimeVersion string = '3.11'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100
@description('Blob container for the jobs\' artifacts (ARTIFACTS_CONTAINER).')
param artifactsContainer string = 'waa-artifacts'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// AzureWebJobsStorage as an identity-based connection: the Functions host (blob, queue), the
// Durable Functions extension (queues, tables, blobs) and the app's state table
// (__tableServiceUri, adapters/runtime.py) all use it; there is no storage key to set.
// Application Insights takes Entra ID only (disableLocalAuth), hence the authentication string
// naming the identity (read by the Azure Monitor exporter and the host).
var hostAppSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// Artifacts (adapters/artifacts.py): jobs upload each task's result folder to this container of
// the same storage account, with write-only user-delegation SAS URLs the app mints with the
// identity (Storage Blob Data Owner, app/rbac.bicep, may get user-delegation keys); the app
// creates the container on first use. The blob endpoint is __blobServiceUri above.
var artifactsAppSettings = {
  ARTIFACTS_ENABLED: 'true'
  ARTIFACTS_CONTAINER: artifactsContainer
}

// Model credentials as Key Vault *names* (adapters/settings.py, "Model credentials (Key Vault)"):
// not Key Vault references, because the app never holds the values; the jobs read them with their
// own identity. The endpoint goes with the Azure OpenAI key only (the app refuses one without
// the other).
var modelCredentialAppSettings = {
  MODEL_SECRETS_VAULT_URL: modelSecretsVaultUrl
  OPENAI_API_KEY_SECRET: openAiApiKeySecretName
  AZURE_API_KEY_SECRET: azureApiKeySecretName
  AZURE_ENDPOINT: empty(azureApiKeySecretName) ? '' : azureOpenAiEndpoint
  JOB_IDENTITY_CLIENT_ID: jobIdentityClientId
}

module site 'br/public:avm/res/web/site:0.15.1' = {
  name: '${name}-flex-consumption'
  params: {
    kind: 'functionapp,linux'
    name: name
    location: location
    // azd finds the app to deploy the "api" service of azure.yaml to by this tag.
    tags: union(tags, { 'azd-service-name': 'api' })
    serverFarmResourceId: planId
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [identityId]
    }
    // Key Vault references resolve with this identity (there is no system-assigned one).
    keyVaultAccessIdentityResourceId: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: runtimeVersion
      }
    }
    siteConfig: {
      alwaysOn: false
    }
    appSettingsKeyValuePairs: union(appSettings, hostAppSettings, artifactsAppSettings, modelCredentialAppSettings)
  }
}

output name string = site.outputs.name
output defaultHostname string = site.outputs.defaultHostname
