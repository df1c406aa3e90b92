// The app's secrets: the heartbeat key (HEARTBEAT_SECRET) and, for the VM tier, the SSH private
// key (VM_SSH_PRIVATE_KEY). The app settings reference them
// (@Microsoft.KeyVault(VaultName=...;SecretName=...), no version: the latest is used), and the
// platform resolves the references with the app's identity (RBAC authorization).
//
// The model's credentials (docs/azure-setup.md, "Model credentials"): the OpenAI key and/or the
// Azure OpenAI key, stored here when given (or later with `az keyvault secret set`). The app
// never reads them: its settings name them (OPENAI_API_KEY_SECRET, AZURE_API_KEY_SECRET), and
// the jobs read them at start with the jobs' identity, which may read secrets and nothing else
// (Key Vault Secrets User). The app's identity also writes each Azure ML and Batch attempt's
// heartbeat token here (adapters/secrets.py), hence Key Vault Secrets Officer (read, set and
// delete secrets; no role or vault management), which also covers resolving its references.

param name string
param location string
param tags object
param identityPrincipalId string
@secure()
param heartbeatSecret string
@secure()
param vmSshPrivateKey string = ''
@description('Principal id of the identity the Azure ML and Batch jobs run with; empty: none.')
param jobIdentityPrincipalId string = ''
@secure()
param openAiApiKey string = ''
@secure()
param azureOpenAiApiKey string = ''

// Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var heartbeatSecretName = 'heartbeat-secret'
var sshKeySecretName = 'vm-ssh-private-key'
// Key Vault secret names: 1-127 of 0-9, a-z, A-Z and "-" (domain/credentials.py).
var openAiKeySecretName = 'openai-api-key'
var azureOpenAiKeySecretName = 'azure-openai-api-key'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource heartbeat 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: heartbeatSecretName
  properties: {
    value: heartbeatSecret
  }
}

resource sshKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(vmSshPrivateKey)) {
  parent: vault
  name: sshKeySecretName
  properties: {
    value: vmSshPrivateKey
  }
}

resource openAiKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(openAiApiKey)) {
  parent: vault
  name: openAiKeySecretName
  properties: {
    value: openAiApiKey
    contentType: 'text/plain'
  }
}

resource azureOpenAiKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(azureOpenAiApiKey)) {
  parent: vault
  name: azureOpenAiKeySecretName
  properties: {
    value: azureOpenAiApiKey
    contentType: 'text/plain'
  }
}

resource identityManagesSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource jobsReadSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(jobIdentityPrincipalId)) {
  name: guid(vault.id, jobIdentityPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: jobIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
output heartbeatSecretName string = heartbeat.name
output sshKeySecretName string = sshKeySecretName
// '' when the key was not given here (it may still be set in the vault later: then set the
// app setting by hand, docs/azure-setup.md).
output openAiKeySecretName string = empty(openAiApiKey) ? '' : openAiKeySecretName
output azureOpenAiKeySecretName string = empty(azureOpenAiApiKey) ? '' : azureOpenAiKeySecretName
