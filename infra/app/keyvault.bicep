// The app's secrets: the heartbeat key (HEARTBEAT_SECRET) and, for the VM tier, the SSH private
// key (VM_SSH_PRIVATE_KEY). The app settings reference them
// (@Microsoft.KeyVault(VaultName=...;SecretName=...), no version: the latest is used), and the
// platform resolves the references with the app's identity, which may read secrets and nothing
// else (Key Vault Secrets User, RBAC authorization).

param name string
param location string
param tags object
param identityPrincipalId string
@secure()
param heartbeatSecret string
@secure()
param vmSshPrivateKey string = ''

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var heartbeatSecretName = 'heartbeat-secret'
var sshKeySecretName = 'vm-ssh-private-key'

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

resource identityReadsSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
output heartbeatSecretName string = heartbeat.name
output sshKeySecretName string = sshKeySecretName
