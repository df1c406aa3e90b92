// The Batch side, deployed in the Batch account's resource group: the app identity may manage
// pools, jobs and tasks through the data plane with Entra ID (no shared key is set), and the
// account's endpoint becomes BATCH_ACCOUNT_URL.
//
// The pool is declared here, not created by the app: the pool pulls the WAA image from a private
// registry and mounts the golden image with a user-assigned managed identity, and only ARM can
// give a pool an identity (the Batch data plane that the app's azure-batch 15.x client speaks
// reports `BatchPool.identity` read-only, and its pool-create options have no such field). The app
// references the pool by BATCH_POOL_ID and WAA_COMPUTE_IDENTITY_ID, resizes it, and refuses one
// that lacks the identity, the mount or the registry (adapters/compute/batch.py, which builds the
// same mount and registry entries in `pool_mounts` / `pool_registries`).
//
// The identity needs, outside this template (the registry and the golden image's storage account
// may live anywhere): AcrPull on the registry, Storage Blob Data Reader on the golden image's
// container (docs/azure-setup.md).

param accountName string
param identityPrincipalId string
@description('ARM resource id of the user-assigned identity the pool pulls and mounts with.')
param identityId string
param poolId string
param poolVmSize string
@description('The WAA image the pool prefetches, e.g. waaregistry.azurecr.io/windowsarena/winarena:latest.')
param image string
@description('Blob account and container of the golden image (WAA_GOLDEN_IMAGE_URL); empty: none.')
param goldenAccountName string = ''
param goldenContainerName string = ''

// Built-in role "Azure Batch Data Contributor": pools and jobs, not the account itself.
var azureBatchDataContributor = '6aaa78f1-f7de-44ca-8722-c64a23943cae'
// The registry host of the image, as Docker reads it (adapters/compute/batch.py registry_of).
var imageHost = split(image, '/')[0]
var privateRegistry = endsWith(toLower(imageHost), '.azurecr.io')
var identityReference = { resourceId: identityId }

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

// Properties as the ARM reference gives them (learn.microsoft.com/azure/templates/microsoft.batch/
// 2024-02-01/batchaccounts/pools): identity.userAssignedIdentities, containerRegistries[].
// identityReference, mountConfiguration[].azureBlobFileSystemConfiguration.identityReference.
resource pool 'Microsoft.Batch/batchAccounts/pools@2024-02-01' = {
  parent: account
  name: poolId
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    vmSize: poolVmSize
    taskSlotsPerNode: 1
    deploymentConfiguration: {
      virtualMachineConfiguration: {
        // A Batch-supported Ubuntu image with a container runtime (DEFAULT_VM_IMAGE in the app).
        imageReference: {
          publisher: 'microsoft-dsvm'
          offer: 'ubuntu-hpc'
          sku: '2204'
          version: 'latest'
        }
        nodeAgentSkuId: 'batch.node.ubuntu 22.04'
        containerConfiguration: {
          type: 'DockerCompatible'
          containerImageNames: [image]
          containerRegistries: privateRegistry
            ? [
                {
                  registryServer: imageHost
                  identityReference: identityReference
                }
              ]
            : []
        }
      }
    }
    // Read-only by blobfuse's own option (BLOBFUSE_OPTIONS in the app); mounted at
    // $AZ_BATCH_NODE_MOUNTS_DIR/waa-golden (GOLDEN_MOUNT).
    mountConfiguration: empty(goldenAccountName)
      ? []
      : [
          {
            azureBlobFileSystemConfiguration: {
              accountName: goldenAccountName
              containerName: goldenContainerName
              relativeMountPath: 'waa-golden'
              blobfuseOptions: '-o ro -o allow_other -o attr_timeout=240 -o entry_timeout=240'
              identityReference: identityReference
            }
          }
        ]
    // A node without nested virtualization fails its start task (starttaskfailed) instead of
    // hanging a shard (KVM_CHECK_COMMAND in the app).
    startTask: {
      commandLine: '/bin/sh -c \'test -c /dev/kvm\''
      waitForSuccess: true
    }
    // No nodes until an evaluation asks: the app resizes the pool (ensure_capacity). A
    // provision while an evaluation runs sets it back to 0: provision between evaluations.
    scaleSettings: {
      fixedScale: {
        targetDedicatedNodes: 0
        targetLowPriorityNodes: 0
        resizeTimeout: 'PT30M'
      }
    }
  }
}

// e.g. waabatch.westeurope.batch.azure.com
output accountEndpoint string = account.properties.accountEndpoint
output poolId string = pool.name
