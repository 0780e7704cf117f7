// Key Vault for the credentials and webhook secrets the app settings reference.
//
// Access is Azure RBAC only (no access policies), so who can read or write a secret is visible
// and auditable in one place: rbac.bicep. Purge protection is on: a deleted vault or secret can
// be recovered for the retention period and cannot be destroyed early, which is what protects a
// working client secret from an accidental or malicious delete.

param name string
param location string
param tags object

@description('Log Analytics workspace for the vault audit log (who read or changed which secret).')
param workspaceResourceId string

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int

param enableTelemetry bool

module vault 'br/public:avm/res/key-vault/vault:0.13.3' = {
  name: 'key-vault'
  params: {
    name: name
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    // App Service resolves Key Vault references from its public outbound addresses unless the app
    // is VNet-integrated; "AzureServices" alone would not let it through a Deny default.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    diagnosticSettings: [
      {
        name: 'audit-to-log-analytics'
        workspaceResourceId: workspaceResourceId
        logCategoriesAndGroups: [
          {
            categoryGroup: 'audit'
          }
        ]
        metricCategories: []
      }
    ]
    enableTelemetry: enableTelemetry
  }
}

output name string = vault.outputs.name
output resourceId string = vault.outputs.resourceId
output uri string = vault.outputs.uri
