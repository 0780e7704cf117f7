// The storage account behind AzureWebJobsStorage: the product's tables and queues, the Functions
// host's leases and timer state, and the Flex Consumption deployment package.
//
// Shared-key access is off, so there is no account key to leak or rotate: every caller (the
// function app's user-assigned identity, the Flex deployment, an admin with a data role) signs in
// with Entra ID. Public network access stays on because Flex Consumption without a virtual
// network reaches storage over its public endpoint (see docs/deploy.md, "Network isolation").

param name string
param location string
param tags object

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Log Analytics workspace that receives queue write logs (parked-work alert).')
param workspaceResourceId string

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string

param enableTelemetry bool

module account 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage-account'
  params: {
    name: name
    location: location
    tags: tags
    skuName: skuName
    kind: 'StorageV2'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        {
          name: deploymentContainerName
          publicAccess: 'None'
        }
      ]
    }
    enableTelemetry: enableTelemetry
  }
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: name
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

// Queue write operations go to Log Analytics so that the "parked work" alert can see every
// message put into a `<queue>-poison` queue, whoever put it there (the Functions host after the
// last dequeue, or the product after its last retry). Only StorageWrite: reads are the host's
// polling every few seconds and would cost ingestion without telling anything.
resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'queue-writes-to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: workspaceResourceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
    ]
  }
  dependsOn: [
    account
  ]
}

output name string = account.outputs.name
output resourceId string = account.outputs.resourceId
