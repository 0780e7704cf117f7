// Log Analytics + workspace-based Application Insights (Azure Verified Modules).
//
// Local (key-based) ingestion is off: the function app sends telemetry with its user-assigned
// identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), which needs "Monitoring Metrics
// Publisher" on the component (granted in rbac.bicep). A leaked connection string then cannot be
// used to inject telemetry.

@description('Log Analytics workspace name.')
param workspaceName string

@description('Application Insights component name.')
param appInsightsName string

param location string
param tags object

@description('Days Log Analytics keeps logs (30 is included in the per-GB price).')
@minValue(30)
@maxValue(730)
param retentionInDays int

@description('AVM usage telemetry (a no-op deployment named 46d3xbcp.*). Off by default in a customer tenant.')
param enableTelemetry bool

module workspace 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'log-analytics'
  params: {
    name: workspaceName
    location: location
    tags: tags
    dataRetention: retentionInDays
    enableTelemetry: enableTelemetry
  }
}

module appInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'application-insights'
  params: {
    name: appInsightsName
    location: location
    tags: tags
    workspaceResourceId: workspace.outputs.resourceId
    disableLocalAuth: true
    enableTelemetry: enableTelemetry
  }
}

output workspaceResourceId string = workspace.outputs.resourceId
output appInsightsName string = appInsights.outputs.name
output appInsightsResourceId string = appInsights.outputs.resourceId
