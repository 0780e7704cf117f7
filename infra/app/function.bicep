// The Flex Consumption plan and function app (Python 3.11), on Azure Verified Modules.
//
// The app runs as one user-assigned identity (no system-assigned identity): the same identity
// reads storage, resolves Key Vault references, sends telemetry and, in managed_identity mode,
// signs in to Microsoft Graph as a federated credential of the app registration. It exists
// before the app, so role assignments are in place by the time the host first starts.

param planName string
param appName string
param location string
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityResourceId string

@description('Client id of that identity (AzureWebJobsStorage__clientId, telemetry auth).')
param identityClientId string

@description('The AzureWebJobsStorage account (identity-based connection, no key).')
param storageAccountName string

param deploymentContainerName string

param appInsightsName string

@description('The product\'s own settings (README "Settings"); resources.bicep builds them.')
param productSettings object

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Always-ready instances for the `http` group (every HTTP function). Graph expects its notification endpoints to answer within 3 s; a cold start can take longer, so at least 1 keeps Graph from throttling or dropping the subscription.')
@minValue(0)
@maxValue(20)
param alwaysReadyHttpInstances int

param enableTelemetry bool

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Host plumbing: how the Functions host reaches storage and Application Insights. No key, no
// connection string with a secret: both sign in with the user-assigned identity. (Flex
// Consumption sets the runtime in functionAppConfig; FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION are not allowed as app settings there.)
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // The account name alone means the public cloud's endpoints, to the host and to the app; the
  // service URIs follow the cloud this is deployed to (e.g. core.chinacloudapi.cn).
  AzureWebJobsStorage__blobServiceUri: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
  AzureWebJobsStorage__queueServiceUri: 'https://${storageAccountName}.queue.${environment().suffixes.storage}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storageAccountName}.table.${environment().suffixes.storage}'
  // The connection string only names the ingestion endpoint; with local auth off, ingestion
  // needs the identity below.
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // With host.json "telemetryMode": "OpenTelemetry" (Use OpenTelemetry with Azure Functions,
  // Python): the Python worker sets up the Azure Monitor distro (azure-monitor-opentelemetry,
  // requirements.txt) before it loads the app, and the app's spans and log lines go to
  // Application Insights from the worker, signed in with the identity above.
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  // The distro's own instrumentations, off (sync_core/telemetry.py DISABLED_INSTRUMENTATIONS):
  // requests and urllib3 would trace every Graph call a second time under its full URL (mailbox,
  // event id), azure_sdk every storage call with its table keys (mailbox addresses), urllib any
  // other call with its URL. sync_core/telemetry.py makes one span per Graph call instead.
  OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: 'azure_sdk,requests,urllib,urllib3'
}

// `http` is the Flex group of every HTTP-triggered function (health, booking_events,
// graph_notifications, graph_lifecycle, mappings_* and the other admin routes).
var alwaysReady = alwaysReadyHttpInstances > 0 ? [ { name: 'http', instanceCount: alwaysReadyHttpInstances } ] : []

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'flex-plan'
  params: {
    name: planName
    location: location
    tags: tags
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    enableTelemetry: enableTelemetry
  }
}

module site 'br/public:avm/res/web/site:0.15.1' = {
  name: 'function-app'
  params: {
    name: appName
    location: location
    // azd finds the app to deploy to by this tag (services.api in azure.yaml).
    tags: union(tags, { 'azd-service-name': 'api' })
    kind: 'functionapp,linux'
    serverFarmResourceId: plan.outputs.resourceId
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [
        identityResourceId
      ]
    }
    // Key Vault references resolve with the user-assigned identity, not a system identity.
    keyVaultAccessIdentityResourceId: identityResourceId
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    // No FTP or basic-auth publishing: azd deploys with the signed-in admin's Entra token.
    basicPublishingCredentialsPolicies: [
      {
        name: 'ftp'
        allow: false
      }
      {
        name: 'scm'
        allow: false
      }
    ]
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      // Flex Consumption has no "always on"; always-ready instances (above) take its place.
      alwaysOn: false
      minTlsVersion: '1.2'
    }
    appSettingsKeyValuePairs: union(productSettings, hostSettings)
    enableTelemetry: enableTelemetry
  }
}

// The access keys (infra/app/function-keys.bicep sets them once the code is deployed): the
// platform's key opens the booking route only, the admin's host key every keyed route.
var accessKeys = {
  bookingFunction: 'booking_events' // function_app.py: POST api/bookings/events
  bookingKey: 'platform'
  adminKey: 'admin'
}

output name string = site.outputs.name
output resourceId string = site.outputs.resourceId
output bookingFunctionName string = accessKeys.bookingFunction
output bookingKeyName string = accessKeys.bookingKey
output adminKeyName string = accessKeys.adminKey
