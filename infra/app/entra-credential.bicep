// The function app's user-assigned managed identity as a federated identity credential of the
// app registration of app/entra.bicep: the app exchanges an identity token for a Graph token and
// no secret or certificate exists. Deployed after the identity (app/resources.bicep), which
// needs the registration's application id first, hence a module of its own.
//
// Also, with secret rotation: the registration's service principal becomes one of its owners,
// so Application.ReadWrite.OwnedBy lets the app manage its own secrets and nothing else.

extension microsoftGraphV1

targetScope = 'resourceGroup'

@description('Name of the azd environment; part of the credential\'s name.')
param environmentName string

@description('uniqueName of the app registration (app/entra.bicep).')
param applicationUniqueName string

@description('Display name of the app registration (app/entra.bicep); restated, it is required.')
param applicationDisplayName string

@description('Object id of the app registration\'s service principal (app/entra.bicep).')
param servicePrincipalId string

@description('Object (principal) id of the function app\'s user-assigned managed identity.')
param identityPrincipalId string

@description('Entra login host that issues the identity\'s tokens.')
param authorityHost string = 'https://login.microsoftonline.com'

@description('The app rotates its own client secret: its service principal owns the registration.')
param enableSecretRotation bool

// Tokens of a managed identity: issued by the tenant's v2.0 endpoint, subject the identity's
// object id, audience the token exchange of the Azure public cloud (the only cloud the Graph
// Bicep extension deploys to).
var issuer = '${authorityHost}/${tenant().tenantId}/v2.0'
var audience = 'api://AzureADTokenExchange'
// Unique per environment, so a second environment never replaces this one's sign-in.
var credentialName = 'calendar-sync-${environmentName}-managed-identity'

// Restated with its key (uniqueName) and required displayName only: an update changes just the
// properties written here, and `append` adds the owner without removing any.
resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: applicationUniqueName
  displayName: applicationDisplayName
  owners: {
    relationshipSemantics: 'append'
    relationships: enableSecretRotation ? [servicePrincipalId] : []
  }

  resource managedIdentity 'federatedIdentityCredentials@v1.0' = {
    name: '${application.uniqueName}/${credentialName}'
    description: 'calendar-sync function app (azd environment ${environmentName}): its user-assigned managed identity signs in as this app registration'
    issuer: issuer
    subject: identityPrincipalId
    audiences: [
      audience
    ]
  }
}

output federatedCredentialName string = credentialName
output issuer string = issuer
