// The Batch side, deployed in the Batch account's resource group: the app identity may manage
// pools, jobs and tasks through the data plane with Entra ID (no shared key is set), and the
// account's endpoint becomes BATCH_ACCOUNT_URL.

param accountName string
param identityPrincipalId string

// Built-in role "Azure Batch Data Contributor": pools and jobs, not the account itself.
var azureBatchDataContributor = '6aaa78f1-f7de-44ca-8722-c64a23943cae'

resource account 'Microsoft.Batch/batchAccounts@2024-02-01' existing = {
  name: accountName
}

resource identityOnAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, azureBatchDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureBatchDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// e.g. waabatch.westeurope.batch.azure.com
output accountEndpoint string = account.properties.accountEndpoint
