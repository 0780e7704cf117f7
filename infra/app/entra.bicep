// The Entra app registration the service signs in to Microsoft Graph as, one per azd
// environment: the application, its service principal and its Microsoft Graph application
// permissions with admin consent (app role assignments). app/entra-credential.bicep adds the
// function app's managed identity as its federated credential once the identity exists.
//
// The same permission list as infra/scripts/app-registration.sh (why each: docs/permissions.md).
// Deploying it needs, besides creating applications, the right to grant Microsoft Graph
// application permissions (Global Administrator or Privileged Role Administrator). The Microsoft
// Graph Bicep extension (infra/bicepconfig.json) deploys in the Azure public cloud only; sovereign
// clouds, and admins who cannot grant consent, use infra/scripts/app-registration.sh and pass its
// application id as graphClientId, which skips this module.

extension microsoftGraphV1

targetScope = 'resourceGroup'

@description('Name of the azd environment; part of every name here, so environments never share a registration.')
param environmentName string

@allowed([
  'rbac'
  'policy'
  'tenant'
])
@description('How mailboxes are scoped (infra/scripts/mailbox-scope.sh). rbac: Calendars.ReadWrite comes from Exchange RBAC for Applications and is not granted here; policy, tenant: granted here tenant-wide.')
param mailboxScope string

@description('The app rotates its own client secret: Application.ReadWrite.OwnedBy (app/entra-credential.bicep makes its service principal the owner).')
param enableSecretRotation bool

// Microsoft Graph's application id and the app role ids of its application permissions, the same
// in every tenant (infra/scripts/app-registration.sh uses the same ids).
var graphAppId = '00000003-0000-0000-c000-000000000000'
var graphRoles = {
  calendarsReadWrite: 'ef54d2bf-783f-4e0f-bca1-3210c0444d99'
  placeReadAll: '913b9306-0ce1-42b8-9137-6a7df690a760'
  userReadAll: 'df021288-bdef-4463-88db-98f22de89214'
  applicationReadWriteOwnedBy: '18a4783c-866b-4cc7-a460-3d5e5662c884'
}

// The permission list, as a whole: Place.Read.All and User.Read.All always; Calendars.ReadWrite
// only when Exchange does not scope it (mailboxScope policy or tenant); Application.ReadWrite.OwnedBy
// only with secret rotation.
var alwaysRoles = [
  graphRoles.placeReadAll
  graphRoles.userReadAll
]
var calendarRoles = (mailboxScope == 'rbac') ? [] : [
  graphRoles.calendarsReadWrite
]
var rotationRoles = enableSecretRotation ? [
  graphRoles.applicationReadWriteOwnedBy
] : []
var wantedRoles = concat(alwaysRoles, calendarRoles, rotationRoles)

// The same short hash as the Azure resources' names (app/resources.bicep): environments with the
// same name in other subscriptions or groups of the tenant get their own registration.
var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var names = {
  // uniqueName is the registration's key: a second deployment updates it instead of adding one.
  application: 'calendar-sync-${environmentName}-${token}'
  displayName: 'calendar-sync-${environmentName}'
}

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: names.application
  displayName: names.displayName
  description: 'calendar-sync (azd environment ${environmentName}): syncs booking platform resources with Microsoft 365 calendars.'
  signInAudience: 'AzureADMyOrg'
  // Shown under "API permissions"; the grants themselves are the app role assignments below.
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [
        for role in wantedRoles: {
          id: role
          type: 'Role'
        }
      ]
    }
  ]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
}

// Admin consent: one app role assignment per permission, to the app's service principal, on
// Microsoft Graph's.
resource graphPermissions 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for role in wantedRoles: {
    principalId: servicePrincipal.id
    resourceId: graph.id
    appRoleId: role
  }
]

output appId string = application.appId
output applicationUniqueName string = names.application
output displayName string = names.displayName
output servicePrincipalId string = servicePrincipal.id
output grantedRoleIds array = wantedRoles
