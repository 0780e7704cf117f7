// Everything the service needs inside one resource group. Called by infra/main.bicep
// (subscription scope: creates the group) and infra/main-rg.bicep (resource-group scope: for
// customers who grant the deploying admin a single existing resource group only).

targetScope = 'resourceGroup'

param environmentName string
param location string
param tags object

// ---- the app registration (infra/scripts/app-registration.sh creates it) ----
param graphClientId string
param tenantId string
param credentialMode string
@description('Where calendar access comes from: Exchange RBAC for Applications (rbac), an ApplicationAccessPolicy (policy) or the whole tenant.')
param mailboxScope string
param enableSecretRotation bool

// ---- the product's settings (README "Settings") ----
param platformWebhookUrl string
param graphEndpoint string
param authorityHost string
param publicBaseUrl string
param syncWindowDays int
param eventCategory string
param subscriptionLifetimeMinutes int
param inviteGuests bool
param retryAttempts int
param retryBaseSeconds int
param renewSchedule string
param sweepSchedule string
param recoverSchedule string
param credentialSchedule string

// ---- sizing, retention, alerting ----
param alwaysReadyHttpInstances int
param maximumInstanceCount int
param instanceMemoryMB int
param storageSkuName string
param logRetentionInDays int
param keyVaultSoftDeleteRetentionInDays int
param alertEmail string
param adminPrincipalId string
param adminPrincipalType string
param enableTelemetry bool

// Names: a short hash of subscription, group and environment keeps them globally unique and
// stable, so a second deployment updates the same resources instead of creating new ones.
var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var names = {
  identity: 'id-calsync-${token}'
  storage: 'stcalsync${token}'
  keyVault: 'kv-calsync-${token}'
  workspace: 'log-calsync-${token}'
  appInsights: 'appi-calsync-${token}'
  plan: 'plan-calsync-${token}'
  app: 'func-calsync-${token}'
  deploymentContainer: 'deployment-package'
  alertPrefix: 'calsync-${token}'
}

// Secret names in Key Vault. graph-client-secret and graph-client-certificate are the product's
// defaults (KEY_VAULT_SECRET_NAME, KEY_VAULT_CERTIFICATE_NAME); infra/scripts use the same.
var secretNames = {
  bookingWebhook: 'booking-webhook-secret'
  platformWebhook: 'platform-webhook-secret'
  graphClientSecret: 'graph-client-secret'
}

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  params: {
    name: names.identity
    location: location
    tags: tags
    enableTelemetry: enableTelemetry
  }
}

module monitoring 'monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    enableTelemetry: enableTelemetry
  }
}

module storage 'storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: names.deploymentContainer
    workspaceResourceId: monitoring.outputs.workspaceResourceId
    enableTelemetry: enableTelemetry
  }
}

module keyVault 'keyvault.bicep' = {
  name: 'key-vault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    workspaceResourceId: monitoring.outputs.workspaceResourceId
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    enableTelemetry: enableTelemetry
  }
}

module rbac 'rbac.bicep' = {
  name: 'role-assignments'
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    adminPrincipalId: adminPrincipalId
    adminPrincipalType: adminPrincipalType
    credentialMode: credentialMode
  }
}

// An App Service Key Vault reference. Unversioned: the app picks up a new secret version (a
// rotation) when App Service refreshes references (within 24 hours, or at once on restart).
var kvReference = '@Microsoft.KeyVault(VaultName=${names.keyVault};SecretName=__SECRET__)'

var rotationEnabled = credentialMode == 'secret' && enableSecretRotation

// The product's settings, names as in README "Settings". Values the admin chose come from
// parameters; secrets are Key Vault references, never values.
var baseSettings = {
  TENANT_ID: tenantId
  CLIENT_ID: graphClientId
  CREDENTIAL_MODE: credentialMode
  MAILBOX_SCOPE: mailboxScope
  // In managed_identity mode the identity signs in to Graph; in every mode it reads Key Vault.
  MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
  KEY_VAULT_URL: keyVault.outputs.uri
  ROTATION_ENABLED: string(rotationEnabled)
  GRAPH_ENDPOINT: graphEndpoint
  AUTHORITY_HOST: authorityHost
  PUBLIC_BASE_URL: empty(publicBaseUrl) ? 'https://${names.app}.azurewebsites.net' : publicBaseUrl
  BOOKING_WEBHOOK_SECRET: replace(kvReference, '__SECRET__', secretNames.bookingWebhook)
  PLATFORM_WEBHOOK_SECRET: replace(kvReference, '__SECRET__', secretNames.platformWebhook)
  PLATFORM_WEBHOOK_URL: platformWebhookUrl
  SYNC_WINDOW_DAYS: string(syncWindowDays)
  EVENT_CATEGORY: eventCategory
  SUBSCRIPTION_LIFETIME_MINUTES: string(subscriptionLifetimeMinutes)
  INVITE_GUESTS: string(inviteGuests)
  RETRY_ATTEMPTS: string(retryAttempts)
  RETRY_BASE_SECONDS: string(retryBaseSeconds)
  // Timer triggers read their schedules from these (%RENEW_SCHEDULE% ...).
  RENEW_SCHEDULE: renewSchedule
  SWEEP_SCHEDULE: sweepSchedule
  RECOVER_SCHEDULE: recoverSchedule
  CREDENTIAL_SCHEDULE: credentialSchedule
}

// A client secret reaches the app as a Key Vault reference, except when the app rotates it
// itself: then it reads the newest version from KEY_VAULT_URL and CLIENT_SECRET stays unset.
var secretSettings = credentialMode == 'secret' && !rotationEnabled ? { CLIENT_SECRET: replace(kvReference, '__SECRET__', secretNames.graphClientSecret) } : {}

var productSettings = union(baseSettings, secretSettings)

module functionApp 'function.bicep' = {
  name: 'function-app'
  params: {
    planName: names.plan
    appName: names.app
    location: location
    tags: tags
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: names.deploymentContainer
    appInsightsName: monitoring.outputs.appInsightsName
    productSettings: productSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    enableTelemetry: enableTelemetry
  }
  // The host starts as soon as the app exists: its storage and vault roles must be there first.
  dependsOn: [
    rbac
  ]
}

module alerts 'alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: names.alertPrefix
    location: location
    tags: tags
    workspaceResourceId: monitoring.outputs.workspaceResourceId
    appInsightsResourceId: monitoring.outputs.appInsightsResourceId
    storageAccountName: storage.outputs.name
    publicBaseUrl: productSettings.PUBLIC_BASE_URL
    alertEmail: alertEmail
    enableTelemetry: enableTelemetry
  }
}

// Outputs: names and ids only, never a secret or connection string. azd stores them in the
// environment (.azure/<env>/.env) where infra/scripts read them.
output functionAppName string = functionApp.outputs.name
output publicBaseUrl string = productSettings.PUBLIC_BASE_URL
output keyVaultName string = keyVault.outputs.name
output keyVaultUrl string = keyVault.outputs.uri
output storageAccountName string = storage.outputs.name
output identityClientId string = identity.outputs.clientId
output identityPrincipalId string = identity.outputs.principalId
output identityResourceId string = identity.outputs.resourceId
output appInsightsName string = monitoring.outputs.appInsightsName
output alertRuleNames array = alerts.outputs.ruleNames
output availabilityTestName string = alerts.outputs.availabilityTestName
output bookingFunctionName string = functionApp.outputs.bookingFunctionName
output bookingKeyName string = functionApp.outputs.bookingKeyName
output adminKeyName string = functionApp.outputs.adminKeyName
