// Entry point for `azd up` / `azd provision` (subscription scope): creates the resource group
// and everything in it (app/resources.bicep). A customer who grants only an existing resource
// group deploys main-rg.bicep instead: same parameters, same resources (docs/deploy.md).
//
// The Entra app registration, its Graph permissions with admin consent and its federated
// credential come from app/entra.bicep and app/entra-credential.bicep (Microsoft Graph Bicep
// extension), one registration per azd environment, unless graphClientId names one made by
// infra/scripts/app-registration.sh. The mailbox scope (Exchange Online) is set up by
// infra/scripts/mailbox-scope.sh.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment (e.g. "prod"); part of the resource group name and of the hash in every resource name.')
param environmentName string

@minLength(1)
@description('Azure region. Flex Consumption runs in a subset of regions: `az functionapp list-flexconsumption-locations -o table`.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or update. Empty: rg-calendar-sync-<environmentName>.')
param resourceGroupName string = ''

// BEGIN SHARED PARAMETERS (main.bicep and main-rg.bicep declare these identically; a test checks)
@description('Application (client) id of an Entra app registration made by infra/scripts/app-registration.sh (sovereign clouds, or when the deploying admin cannot grant consent). Empty (default): the deployment creates one for this environment (app/entra.bicep). CLIENT_ID.')
@maxLength(36)
param graphClientId string = ''

@allowed([
  'rbac'
  'policy'
  'tenant'
])
@description('Mailbox scoping, as app-registration.sh --mailbox-scope. rbac (default): Calendars.ReadWrite comes from Exchange RBAC for Applications (mailbox-scope.sh --method rbac) and the registration made here does not hold it; policy or tenant: the registration holds it tenant-wide.')
param mailboxScope string = 'rbac'

@description('Directory (tenant) id whose Microsoft 365 calendars are synced. TENANT_ID.')
param tenantId string = tenant().tenantId

@description('How the app signs in to Graph. managed_identity (recommended): the app\'s user-assigned identity is a federated credential of the app registration, no secret exists. certificate or secret: a credential in Key Vault (infra/scripts/credential.sh).')
@allowed([
  'managed_identity'
  'certificate'
  'secret'
])
param credentialMode string = 'managed_identity'

@description('secret mode only: the app rotates its own client secret before it expires (needs Application.ReadWrite.OwnedBy, see docs/permissions.md).')
param enableSecretRotation bool = false

@description('Where the service posts blockers and status events to the booking platform (https). PLATFORM_WEBHOOK_URL.')
param platformWebhookUrl string

@description('Microsoft Graph root; differs in sovereign clouds (e.g. https://graph.microsoft.us). GRAPH_ENDPOINT.')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Entra login host; differs in sovereign clouds (e.g. https://login.microsoftonline.us). AUTHORITY_HOST.')
param authorityHost string = 'https://login.microsoftonline.com'

@description('Public https origin Graph calls back at. Empty: https://<function app>.azurewebsites.net. Set it when a custom domain or gateway fronts the app. PUBLIC_BASE_URL.')
param publicBaseUrl string = ''

@minValue(1)
@maxValue(1825)
@description('Days ahead that calendars are synced. SYNC_WINDOW_DAYS.')
param syncWindowDays int = 180

@maxLength(255)
@description('Outlook category on events this service writes; empty for none. EVENT_CATEGORY.')
param eventCategory string = ''

@minValue(45)
@maxValue(10080)
@description('Lifetime asked for Graph subscriptions (Graph allows at most 4230 minutes for events). SUBSCRIPTION_LIFETIME_MINUTES.')
param subscriptionLifetimeMinutes int = 4230

@description('true: booking guests become attendees and Outlook sends them invitations. INVITE_GUESTS.')
param inviteGuests bool = false

@minValue(1)
@maxValue(50)
@description('Tries of a booking write, mailbox sync or delivery before it is parked. RETRY_ATTEMPTS.')
param retryAttempts int = 8

@minValue(1)
@maxValue(3600)
@description('First retry delay in seconds; each next one is 3x longer, at most an hour. RETRY_BASE_SECONDS.')
param retryBaseSeconds int = 5

@description('NCRONTAB schedule of renew_subscriptions (default every 6 hours). RENEW_SCHEDULE.')
param renewSchedule string = '0 0 */6 * * *'

@description('NCRONTAB schedule of safety_sweep (default hourly). SWEEP_SCHEDULE.')
param sweepSchedule string = '0 0 * * * *'

@description('NCRONTAB schedule of recover_stalled (default every 30 s): booking changes whose worker died are queued again. RECOVER_SCHEDULE.')
param recoverSchedule string = '*/30 * * * * *'

@description('NCRONTAB schedule of credential_watch (default daily 03:30 UTC). CREDENTIAL_SCHEDULE.')
param credentialSchedule string = '0 30 3 * * *'

@minValue(0)
@maxValue(20)
@description('Always-ready instances for the HTTP functions (Flex "http" group). 1 keeps Graph notifications answered within its 3-second budget; 0 saves the baseline cost and risks cold starts.')
param alwaysReadyHttpInstances int = 1

@minValue(1)
@maxValue(1000)
@description('Upper bound on Flex Consumption instances (also bounds concurrent Graph calls).')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory per instance in MB.')
param instanceMemoryMB int = 2048

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Redundancy of the storage account (state tables and queues). ZRS where the region offers it survives a zone outage.')
param storageSkuName string = 'Standard_LRS'

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps logs and traces.')
param logRetentionInDays int = 30

@minValue(7)
@maxValue(90)
@description('Days a deleted Key Vault or secret can be recovered (purge protection is on).')
param keyVaultSoftDeleteRetentionInDays int = 90

@description('E-mail address for the alerts (credential expiring, parked work, mapping errors). Empty: alerts show in the portal only.')
param alertEmail string = ''

@description('Object id of the admin running infra/scripts (azd: AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer on the vault. Empty: no grant.')
param adminPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Kind of principal adminPrincipalId is (a pipeline deploys as ServicePrincipal).')
param adminPrincipalType string = 'User'

@description('Azure Verified Modules usage telemetry. Off by default: this runs in the customer\'s tenant.')
param enableTelemetry bool = false
// END SHARED PARAMETERS

var tags = {
  'azd-env-name': environmentName
  application: 'calendar-sync'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-calendar-sync-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

// The app registration of this environment (Microsoft Graph Bicep extension), unless
// graphClientId names one made by infra/scripts/app-registration.sh.
var createRegistration = empty(graphClientId)
var registrationRotatesSecret = (credentialMode == 'secret') && enableSecretRotation

module entra 'app/entra.bicep' = if (createRegistration) {
  name: 'calendar-sync-entra'
  scope: rg
  params: {
    environmentName: environmentName
    mailboxScope: mailboxScope
    enableSecretRotation: registrationRotatesSecret
  }
}

var clientId = createRegistration ? entra.outputs.appId : graphClientId

module resources 'app/resources.bicep' = {
  name: 'calendar-sync-resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    graphClientId: clientId
    tenantId: tenantId
    mailboxScope: mailboxScope
    credentialMode: credentialMode
    enableSecretRotation: enableSecretRotation
    platformWebhookUrl: platformWebhookUrl
    graphEndpoint: graphEndpoint
    authorityHost: authorityHost
    publicBaseUrl: publicBaseUrl
    syncWindowDays: syncWindowDays
    eventCategory: eventCategory
    subscriptionLifetimeMinutes: subscriptionLifetimeMinutes
    inviteGuests: inviteGuests
    retryAttempts: retryAttempts
    retryBaseSeconds: retryBaseSeconds
    renewSchedule: renewSchedule
    sweepSchedule: sweepSchedule
    recoverSchedule: recoverSchedule
    credentialSchedule: credentialSchedule
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    storageSkuName: storageSkuName
    logRetentionInDays: logRetentionInDays
    keyVaultSoftDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    alertEmail: alertEmail
    adminPrincipalId: adminPrincipalId
    adminPrincipalType: adminPrincipalType
    enableTelemetry: enableTelemetry
  }
}

// The function app's managed identity as the registration's federated credential: after the
// identity exists (app/resources.bicep), which needs the registration's id first.
module entraCredential 'app/entra-credential.bicep' = if (createRegistration) {
  name: 'calendar-sync-entra-credential'
  scope: rg
  params: {
    environmentName: environmentName
    applicationUniqueName: entra.outputs.applicationUniqueName
    applicationDisplayName: entra.outputs.displayName
    servicePrincipalId: entra.outputs.servicePrincipalId
    identityPrincipalId: resources.outputs.identityPrincipalId
    authorityHost: authorityHost
    enableSecretRotation: registrationRotatesSecret
  }
}

// azd writes these to .azure/<env>/.env; infra/scripts and docs/deploy.md use them by name.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output PUBLIC_BASE_URL string = resources.outputs.publicBaseUrl
output AZURE_KEY_VAULT_NAME string = resources.outputs.keyVaultName
output AZURE_KEY_VAULT_URL string = resources.outputs.keyVaultUrl
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.storageAccountName
output MANAGED_IDENTITY_CLIENT_ID string = resources.outputs.identityClientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = resources.outputs.identityPrincipalId
output APPLICATIONINSIGHTS_NAME string = resources.outputs.appInsightsName
// The booking platform's endpoint and the names of the access keys (function-keys.bicep sets
// them after the code is deployed; infra/scripts/handover.sh prints what the platform needs).
output BOOKING_URL string = '${resources.outputs.publicBaseUrl}/api/bookings/events'
output BOOKING_FUNCTION_NAME string = resources.outputs.bookingFunctionName
output BOOKING_KEY_NAME string = resources.outputs.bookingKeyName
output ADMIN_KEY_NAME string = resources.outputs.adminKeyName
output AVAILABILITY_TEST_NAME string = resources.outputs.availabilityTestName
output GRAPH_CLIENT_ID string = clientId
output CREDENTIAL_MODE string = credentialMode
