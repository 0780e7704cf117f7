// The function app's access keys (docs/deploy.md, "Keys"):
//
//   platform  a function key of the function booking_events: it opens POST /api/bookings/events
//             and no other route. The Functions host scopes a function key to its one function;
//             a host key would open every function-level route, the admin routes included.
//   admin     a host key: opens every function-level route, for the admin (status page, doctor,
//             mappings). Never given to the platform.
//
// A function key can only be set on a function the host has loaded, and the functions arrive
// with the code, after `azd provision`. So this template is deployed after the code, by the
// azd postdeploy hook (infra/scripts/function-keys.sh), not by main.bicep.
//
// The values are kept in Key Vault (function-keys.sh generates them once) and come in as secure
// parameters: the same value on every deployment (a redeployment does not change the key the
// platform holds), and none in the template, the deployment history or the outputs.

targetScope = 'resourceGroup'

@description('The function app (azd output AZURE_FUNCTION_APP_NAME).')
param appName string

@description('The function the platform\'s key opens: function_app.py names it booking_events (route api/bookings/events).')
param bookingFunctionName string = 'booking_events'

@description('Name of the platform\'s function key.')
param bookingKeyName string = 'platform'

@description('Name of the admin\'s host key.')
param adminKeyName string = 'admin'

@secure()
@minLength(32)
@description('Value of the platform\'s key (Key Vault secret booking-function-key).')
param bookingKeyValue string

@secure()
@minLength(32)
@description('Value of the admin\'s key (Key Vault secret admin-function-key).')
param adminKeyValue string

resource site 'Microsoft.Web/sites@2023-12-01' existing = {
  name: appName
}

resource bookingFunction 'Microsoft.Web/sites/functions@2023-12-01' existing = {
  parent: site
  name: bookingFunctionName
}

// PUT .../sites/<app>/functions/booking_events/keys/platform: a key of this function only.
#disable-next-line BCP037 // the Bicep type puts value at the top; the resource provider reads properties
resource bookingKey 'Microsoft.Web/sites/functions/keys@2023-12-01' = {
  parent: bookingFunction
  name: bookingKeyName
  properties: {
    name: bookingKeyName
    value: bookingKeyValue
  }
}

// PUT .../sites/<app>/host/default/functionKeys/admin: a host key (every function-level route).
#disable-next-line BCP081 // no Bicep type is published for host keys; the resource provider accepts it
resource adminKey 'Microsoft.Web/sites/host/functionKeys@2023-12-01' = {
  name: '${site.name}/default/${adminKeyName}'
  properties: {
    name: adminKeyName
    value: adminKeyValue
  }
}

output bookingFunctionName string = bookingFunctionName
output bookingKeyName string = bookingKeyName
output adminKeyName string = adminKeyName
