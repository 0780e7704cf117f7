// Log alert rules for the three conditions an admin must hear about without watching a
// dashboard (docs/deploy.md, "Alerts", says what each one matches and what to do):
//
//   credential-expiring  the daily credential_watch timer warned that the client secret or
//                        certificate expires within 30 days, or logged it as expired or
//                        unusable (its `credential_watch:` lines at warning or error)
//   parked-work          a message was written to a `<queue>-poison` queue: a booking, mailbox
//                        sync or platform delivery gave up after its last retry
//   mapping-errors       a mapping recorded an error (`mapping.error` warning: mailbox unknown,
//                        outside the app's mailbox scope, consent missing, ...)
//   not-answering        the app stopped answering: the availability test's GET /api/health
//                        failed from at least two of its test locations
//
// The first three query the Log Analytics workspace: Application Insights traces land there as
// AppTraces (workspace-based component), queue writes as StorageQueueLogs (storage.bicep). The
// fourth is a metric alert on an Application Insights standard availability test.

param namePrefix string
param location string
param tags object

param workspaceResourceId string

@description('Resource id of the Application Insights component; traces are filtered to it, so a shared workspace does not mix in other apps.')
param appInsightsResourceId string

@description('Storage account whose -poison queues count as parked work.')
param storageAccountName string

@description('Public https origin of the function app; the availability test calls <origin>/api/health.')
param publicBaseUrl string

@description('E-mail address that receives the alerts. Empty: the rules still fire and show in the portal (Monitor → Alerts), but notify nobody.')
param alertEmail string

param enableTelemetry bool

module actionGroup 'br/public:avm/res/insights/action-group:0.8.0' = if (!empty(alertEmail)) {
  name: 'alert-action-group'
  params: {
    name: '${namePrefix}-alerts'
    groupShortName: 'calsync'
    location: 'global'
    tags: tags
    enabled: true
    emailReceivers: [
      {
        name: 'admin'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
    enableTelemetry: enableTelemetry
  }
}

var actionGroupIds = empty(alertEmail) ? [] : [resourceId('Microsoft.Insights/actionGroups', '${namePrefix}-alerts')]

// KQL. Multi-line Bicep strings do not interpolate, so the resource-specific values are put in
// with replace(). SeverityLevel 2 is Warning (3 Error, 4 Critical).
var credentialQuery = replace('''
AppTraces
| where _ResourceId =~ "__APPINSIGHTS__"
| where SeverityLevel >= 2
| where Message startswith "credential_watch:" or Message contains "credential.expiring"
''', '__APPINSIGHTS__', appInsightsResourceId)

var mappingErrorQuery = replace('''
AppTraces
| where _ResourceId =~ "__APPINSIGHTS__"
| where SeverityLevel >= 2
| where Message startswith "mapping.error"
''', '__APPINSIGHTS__', appInsightsResourceId)

var parkedQuery = replace('''
StorageQueueLogs
| where AccountName == "__ACCOUNT__"
| where OperationName == "PutMessage" and toint(StatusCode) between (200 .. 299)
| extend Queue = extract(@"^https?://[^/]+/([^/?]+)/messages", 1, tostring(Uri))
| where Queue endswith "-poison"
''', '__ACCOUNT__', storageAccountName)

var rules = [
  {
    name: 'credential-expiring'
    displayName: 'calendar-sync: Graph credential expires soon'
    description: 'The credential_watch timer warned that the client secret or certificate of the app registration expires within 30 days, or found it expired or unusable. Rotate it (docs/deploy.md, "Rotate or go secretless") before sync stops.'
    severity: 2
    query: credentialQuery
    // The timer runs once a day; an hourly look at the last hour fires once per warning.
    frequency: 'PT1H'
    window: 'PT1H'
  }
  {
    name: 'parked-work'
    displayName: 'calendar-sync: work parked in a poison queue'
    description: 'A booking write, mailbox sync or platform delivery failed on every retry and was parked in a -poison queue. GET /api/admin/status lists parked work and its error.'
    severity: 2
    query: parkedQuery
    frequency: 'PT15M'
    window: 'PT15M'
  }
  {
    name: 'mapping-errors'
    displayName: 'calendar-sync: a mapping reports an error'
    description: 'A resource-to-mailbox mapping recorded an error (for example a mailbox outside the app\'s Exchange scope, or consent missing). GET /api/admin/status shows the error and its fix hint.'
    severity: 3
    query: mappingErrorQuery
    frequency: 'PT15M'
    window: 'PT15M'
  }
]

module rule 'br/public:avm/res/insights/scheduled-query-rule:0.6.0' = [
  for r in rules: {
    name: 'alert-${r.name}'
    params: {
      name: '${namePrefix}-${r.name}'
      location: location
      tags: tags
      kind: 'LogAlert'
      alertDisplayName: r.displayName
      alertDescription: r.description
      enabled: true
      severity: r.severity
      scopes: [
        workspaceResourceId
      ]
      evaluationFrequency: r.frequency
      windowSize: r.window
      // The tables appear only once the first trace or queue write arrives; validating the
      // query against a brand-new workspace would fail the deployment.
      skipQueryValidation: true
      autoMitigate: true
      criterias: {
        allOf: [
          {
            query: r.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroupResourceIds: actionGroupIds
      }
      enableTelemetry: enableTelemetry
    }
    dependsOn: [
      actionGroup
    ]
  }
]

output ruleNames array = [for r in rules: '${namePrefix}-${r.name}']

// ---- the app stopped answering: availability test + metric alert ----------------------------

// Azure's own test agents call the anonymous health route every 5 minutes from three regions. A
// location fails when the answer is not 200 within 30 s (one retry); the alert fires when two
// locations fail at once, so one agent's network trouble does not page anyone. Standard tests
// are billed per run (Azure Monitor pricing).
var healthTestName = '${namePrefix}-health'
var healthTestLocations = [
  'emea-nl-ams-azr' // West Europe
  'emea-gb-db3-azr' // North Europe
  'us-va-ash-azr' // East US
]

resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = {
  name: healthTestName
  location: location
  // Links the test to its Application Insights component (results land there).
  tags: union(tags, { 'hidden-link:${appInsightsResourceId}': 'Resource' })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: healthTestName
    Name: 'calendar-sync: GET /api/health'
    Description: 'The function app answers its health route with 200.'
    Enabled: true
    Kind: 'standard'
    Frequency: 300
    Timeout: 30
    RetryEnabled: true
    Locations: [for id in healthTestLocations: { Id: id }]
    Request: {
      RequestUrl: '${publicBaseUrl}/api/health'
      HttpVerb: 'GET'
      FollowRedirects: false
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

resource notAnswering 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-not-answering'
  location: 'global'
  tags: union(tags, { 'hidden-link:${appInsightsResourceId}': 'Resource', 'hidden-link:${healthTest.id}': 'Resource' })
  properties: {
    description: 'The function app stopped answering GET /api/health (availability test ${healthTestName} failed from at least two locations). Graph notifications and booking events are not being received. Check the app in the portal (Diagnose and solve problems) and docs/deploy.md, "Alerts".'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      appInsightsResourceId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: appInsightsResourceId
      failedLocationCount: 2
    }
    actions: [for id in actionGroupIds: { actionGroupId: id }]
  }
  dependsOn: [
    actionGroup
  ]
}

output availabilityTestName string = healthTest.name
output notAnsweringAlertName string = notAnswering.name
