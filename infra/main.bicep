// The WAA evaluation control plane on Azure, for `azd up`.
//
// In the shape of the official azd template for Durable Functions in Python
// (Azure-Samples/durable-functions-quickstart-python-azd, infra/main.bicep): a resource group,
// one user-assigned managed identity, a Flex Consumption plan and function app, a storage account
// with shared-key access disabled and the identity's blob/queue/table roles, Log Analytics and
// Application Insights (local auth off, the identity publishes metrics). The same AVM modules and
// versions as that template. What this app adds: a Key Vault for its secrets (app settings are
// Key Vault references), the Event Grid system topic on the Azure ML workspace (the subscription
// to the function is created after deploy by infra/hooks/postdeploy.*, as the official Event Grid
// sample Azure-Samples/functions-quickstart-python-azd-eventgrid-blob does), the identity's roles
// on the workspace and the Batch account, and the app settings of every tier.
//
// The Azure ML workspace and the Batch account are existing resources (a workspace brings its own
// storage, registry and vault; create it once, in the region of your GPU/CPU quota). Leave their
// names empty to run without that tier: the control plane then fails over past it.
//
// Every app setting is an entry of an object literal held by a variable whose name ends in
// "AppSettings" (here and in app/api.bicep): tests/deploy/test_infra.py reads them from there and
// checks them against the settings the app reads.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the unique names of all resources.')
param environmentName string

@minLength(1)
@description('Region of every resource (Flex Consumption must be offered there).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the user running azd: gets data access to storage and logs for debugging. Empty: none.')
param principalId string = ''

// Key of the per-attempt heartbeat tokens, stored in Key Vault (HEARTBEAT_SECRET). azd generates
// it on the first provision and keeps it in the environment's config, so a later `azd provision`
// does not rotate it under running jobs ("generate" metadata: learn.microsoft.com/azure/developer/
// azure-developer-cli/metadata). Not in main.parameters.json, which would override that.
@secure()
@minLength(32)
@metadata({ azd: { type: 'generate', config: { length: 48, noSpecial: true } } })
param heartbeatSecret string

@description('The WAA image with the shard runner, in a registry in the compute region.')
param waaImage string = 'waaregistry.azurecr.io/windowsarena/winarena:latest'

@minValue(1)
@maxValue(200)
param maxWorkers int = 20

@description('Durable Functions task hub (host.json reads TASK_HUB_NAME).')
param taskHubName string = 'waaeval'

@description('Existing Azure ML workspace for the azureml tier; empty: no Azure ML tier.')
param azureMlWorkspaceName string = ''

@description('Resource group of the workspace; empty: the resource group created here.')
param azureMlResourceGroupName string = ''

param azureMlComputeName string = 'waa-cluster'

@description('Existing Batch account for the batch tier; empty: no Batch tier.')
param batchAccountName string = ''

@description('Resource group of the Batch account; empty: the resource group created here.')
param batchResourceGroupName string = ''

param batchPoolId string = 'waa-pool'

@description('The VM tier: JSON list of {host, port, user, host_key}; [] for none.')
param vmPool string = '[]'

@secure()
@description('Private key of the VM tier (OpenSSH or PEM); stored in Key Vault. Empty: no VM tier.')
param vmSshPrivateKey string = ''

// The model's credentials (docs/azure-setup.md, "Model credentials"), stored in Key Vault when
// given; the jobs read them there with their own identity. Empty: set them in the vault later.
@secure()
@description('OpenAI API key for the agent (OPENAI_API_KEY); stored in Key Vault. Empty: none.')
param openAiApiKey string = ''

@secure()
@description('Azure OpenAI key for the agent (AZURE_API_KEY); stored in Key Vault. Empty: none.')
param azureOpenAiApiKey string = ''

@description('Azure OpenAI endpoint (AZURE_ENDPOINT, not a secret), with azureOpenAiApiKey.')
param azureOpenAiEndpoint string = ''

var abbrs = {
  resourceGroup: 'rg-'
  identity: 'id-'
  plan: 'plan-'
  functionApp: 'func-'
  storage: 'st'
  logAnalytics: 'log-'
  appInsights: 'appi-'
  keyVault: 'kv-'
  systemTopic: 'evgt-'
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.functionApp}waa-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var keyVaultName = '${abbrs.keyVault}${resourceToken}'
var mlResourceGroupName = empty(azureMlResourceGroupName) ? rg.name : azureMlResourceGroupName
var batchGroupName = empty(batchResourceGroupName) ? rg.name : batchResourceGroupName

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

// The app's one identity: host storage, Durable Functions, the state table, telemetry, Key Vault
// references, Azure ML, Batch.
module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.identity}waa-${resourceToken}'
    location: location
    tags: tags
  }
}

// The jobs' identity: the Azure ML cluster and the Batch pool run jobs with it; it may read the
// vault's secrets (the model's keys, the attempts' heartbeat tokens) and nothing else.
module jobIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'jobIdentity'
  scope: rg
  params: {
    name: '${abbrs.identity}waa-job-${resourceToken}'
    location: location
    tags: tags
  }
}

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'plan'
  scope: rg
  params: {
    name: '${abbrs.plan}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storage}${resourceToken}'
    location: location
    tags: tags
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only: the app and the host hold no storage key
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [{ name: deploymentContainerName }]
    }
    minimumTlsVersion: 'TLS1_2'
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: '${abbrs.logAnalytics}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module monitoring 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'monitoring'
  scope: rg
  params: {
    name: '${abbrs.appInsights}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.name
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    jobIdentityName: jobIdentity.outputs.name
  }
}

module vault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    identityPrincipalId: identity.outputs.principalId
    heartbeatSecret: heartbeatSecret
    vmSshPrivateKey: vmSshPrivateKey
    jobIdentityPrincipalId: jobIdentity.outputs.principalId
    openAiApiKey: openAiApiKey
    azureOpenAiApiKey: azureOpenAiApiKey
  }
}

module azureMl 'app/azureml.bicep' = if (!empty(azureMlWorkspaceName)) {
  name: 'azureml'
  scope: resourceGroup(mlResourceGroupName)
  params: {
    workspaceName: azureMlWorkspaceName
    systemTopicName: '${abbrs.systemTopic}aml-${resourceToken}'
    identityPrincipalId: identity.outputs.principalId
    tags: tags
  }
  dependsOn: [rg] // its resource group may be the one created here
}

module batch 'app/batch.bicep' = if (!empty(batchAccountName)) {
  name: 'batch'
  scope: resourceGroup(batchGroupName)
  params: {
    accountName: batchAccountName
    identityPrincipalId: identity.outputs.principalId
  }
  dependsOn: [rg]
}

// Every setting adapters/settings.py reads, for the real tiers (the simulator's SIM_* stay unset).
// Secrets are Key Vault references, resolved by the platform with the app's identity
// (keyVaultAccessIdentityResourceId in app/api.bicep) before the app reads its environment.
var controlPlaneAppSettings = {
  TASK_HUB_NAME: taskHubName
  STATE_TABLE_PREFIX: 'waa'
  MAX_WORKERS: string(maxWorkers)
  COMPUTE_BACKEND: 'azure'
  // Jobs post heartbeats here; the platform's default host name of a new app.
  PUBLIC_BASE_URL: 'https://${functionAppName}.azurewebsites.net'
  HEARTBEAT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${vault.outputs.heartbeatSecretName})'
  WAA_IMAGE: waaImage
  SWEEP_SCHEDULE: '0 */2 * * * *'
  // The identity for the compute tiers (DefaultAzureCredential's managed_identity_client_id).
  AZURE_CLIENT_ID: identity.outputs.clientId
  AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  AZURE_RESOURCE_GROUP: empty(azureMlWorkspaceName) ? '' : mlResourceGroupName
  AZUREML_WORKSPACE: azureMlWorkspaceName
  AZUREML_COMPUTE_NAME: azureMlComputeName
  BATCH_ACCOUNT_URL: empty(batchAccountName) ? '' : 'https://${batch.outputs.accountEndpoint}'
  BATCH_POOL_ID: batchPoolId
  VM_POOL: vmPool
}
var sshKeyAppSettings = empty(vmSshPrivateKey)
  ? {}
  : {
      VM_SSH_PRIVATE_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${vault.outputs.sshKeySecretName})'
    }
// Read by the Python worker, not the app: load the app's own azure-functions (1.26, which decodes
// CloudEvents deliveries) rather than the worker's copy (Azure/azure-functions-python-worker#1642,
// needed on Python <= 3.12), and configure OpenTelemetry to Application Insights before the app
// loads (README "Telemetry").
var workerAppSettings = {
  PYTHON_ISOLATE_WORKER_DEPENDENCIES: '1'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    planId: plan.outputs.resourceId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.name
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    appSettings: union(controlPlaneAppSettings, sshKeyAppSettings, workerAppSettings)
    modelSecretsVaultUrl: vault.outputs.uri
    openAiApiKeySecretName: vault.outputs.openAiKeySecretName
    azureApiKeySecretName: vault.outputs.azureOpenAiKeySecretName
    azureOpenAiEndpoint: azureOpenAiEndpoint
    jobIdentityClientId: jobIdentity.outputs.clientId
  }
}

// azd stores these in the environment (.azure/<env>/.env); the hooks read them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVaultName
// Attach this identity to the Azure ML cluster and the Batch pool (docs/azure-setup.md).
output JOB_IDENTITY_RESOURCE_ID string = jobIdentity.outputs.resourceId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.name
output AML_SYSTEM_TOPIC_NAME string = empty(azureMlWorkspaceName) ? '' : azureMl.outputs.systemTopicName
output AML_RESOURCE_GROUP string = empty(azureMlWorkspaceName) ? '' : mlResourceGroupName
