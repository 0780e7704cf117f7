#!/usr/bin/env pwsh
<#
.SYNOPSIS
Limits which mailboxes the app can reach in Exchange Online to the direct members of one
mail-enabled security group, and tests it. The PowerShell twin of infra/scripts/mailbox-scope.sh
(same steps, same names, same checks); azd runs it after provisioning on Windows.

.DESCRIPTION
-Method rbac (default): Exchange Online RBAC for Applications. The app's service principal is
registered in Exchange (New-ServicePrincipal), a management scope on the group is created
(New-ManagementScope -RecipientRestrictionFilter "MemberOfGroup -eq '<group DN>'") and the role
"Application Calendars.ReadWrite" is assigned to the app with that scope. Exchange RBAC adds to
Entra ID grants and cannot narrow them, so the script refuses to run when the app holds
Calendars.ReadWrite tenant-wide in Entra ID.

-Method policy: the older ApplicationAccessPolicy (RestrictAccess to the group).

Every step looks before it creates or changes, so running it again converges. -DryRun prints
the calls instead of making them (no az, no Exchange sign-in). With -IfGroupSet and no group
(MAILBOX_GROUP unset in the azd environment) it says so in one line and changes nothing.
Exchange caches these grants: a change takes 30 minutes to 2 hours to apply everywhere.

Needs the Azure CLI (az, signed in), the ExchangeOnlineManagement module
(Install-Module ExchangeOnlineManagement -Scope CurrentUser) and an Exchange admin
(Organization Management role group, or the Exchange Administrator role).

.EXAMPLE
./infra/scripts/mailbox-scope.ps1 -Group rooms-sync@contoso.com -Test room.berlin@contoso.com -ExpectDenied ceo@contoso.com
#>
[CmdletBinding()]
param(
    # The app registration (default: $env:GRAPH_CLIENT_ID).
    [string] $ClientId = $env:GRAPH_CLIENT_ID,
    # Mail-enabled security group whose direct members the app may reach (default: $env:MAILBOX_GROUP).
    [string] $Group = $env:MAILBOX_GROUP,
    # rbac or policy (default: $env:MAILBOX_SCOPE, the deployment's mailboxScope, else rbac).
    [ValidateSet('rbac', 'policy', 'tenant', '')]
    [string] $Method = $env:MAILBOX_SCOPE,
    # Name of the management scope / role assignment.
    [string] $Name = 'calendar-sync',
    # Object id of the app's service principal (default: looked up with az).
    [string] $SpObjectId = '',
    # Mailboxes the app must reach.
    [string[]] $Test = @(),
    # Mailboxes the app must NOT reach (outside the group).
    [string[]] $ExpectDenied = @(),
    # Exchange admin to sign in as (default: $env:MAILBOX_SCOPE_ADMIN).
    [string] $Admin = $env:MAILBOX_SCOPE_ADMIN,
    # No group given: skip with one line instead of failing (the azd hook).
    [switch] $IfGroupSet,
    # Print the calls instead of making them.
    [switch] $DryRun
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$RoleCalendarsReadWrite = 'ef54d2bf-783f-4e0f-bca1-3210c0444d99'
$ExchangeRole = 'Application Calendars.ReadWrite'

function Write-Step([string] $Message) { [Console]::Error.WriteLine("==> $Message") }
function Stop-WithError([string] $Message) { [Console]::Error.WriteLine("error: $Message"); exit 1 }
# The calls go to the host, not the pipeline: functions that print a call still return only their result.
function Show-Call([string] $Line) { Write-Host "+ $Line" }

if ([string]::IsNullOrEmpty($Method)) { $Method = 'rbac' }
if ($IfGroupSet -and $Method -eq 'tenant') {
    Write-Step 'mailbox scope: skipped, MAILBOX_SCOPE is tenant (the app may reach every mailbox by design)'
    exit 0
}
if ($Method -eq 'tenant') { Stop-WithError '-Method must be rbac or policy' }
if ($IfGroupSet -and [string]::IsNullOrEmpty($Group)) {
    Write-Step 'mailbox scope: skipped, MAILBOX_GROUP is not set (to scope the app to a group: azd env set MAILBOX_GROUP <group address>, then azd provision)'
    exit 0
}
if ([string]::IsNullOrEmpty($ClientId)) { Stop-WithError '-ClientId is required' }
if ([string]::IsNullOrEmpty($Group) -and $Test.Count -eq 0 -and $ExpectDenied.Count -eq 0) {
    Stop-WithError '-Group is required (or -Test / -ExpectDenied to test an existing scope)'
}
foreach ($value in @($ClientId, $Group, $Name, $SpObjectId, $Admin) + $Test + $ExpectDenied) {
    if ($value -and $value -match "['``$]") { Stop-WithError "quotes, backticks and `$ are not allowed in arguments: $value" }
}
if ($DryRun) { Write-Step 'dry run: printing the calls; nothing is changed' }

# Runs az and returns its trimmed output; stops on failure, naming the call.
function Invoke-Az([string[]] $Arguments) {
    Show-Call ('az ' + ($Arguments -join ' '))
    if ($DryRun) { return '' }
    $out = & az @Arguments
    if ($LASTEXITCODE -ne 0) { Stop-WithError ('this call failed: az ' + ($Arguments -join ' ')) }
    return (($out | Out-String).Trim())
}

# ---- Entra side (az): the service principal, and no tenant-wide grant in rbac mode ----
if ($Group -and ($Method -eq 'rbac' -or -not $SpObjectId)) {
    if (-not $DryRun) {
        if (-not (Get-Command az -ErrorAction SilentlyContinue)) { Stop-WithError 'az is required and not installed (https://aka.ms/azure-cli)' }
        $tenant = & az account show --query tenantId -o tsv 2>$null
        if ($LASTEXITCODE -ne 0 -or -not $tenant) { Stop-WithError "not signed in to the Azure CLI: run 'az login'" }
    }
    if (-not $SpObjectId) {
        $SpObjectId = Invoke-Az @('ad', 'sp', 'show', '--id', $ClientId, '--query', 'id', '-o', 'tsv')
        if ($DryRun) { $SpObjectId = '<service-principal-object-id>' }
        elseif (-not $SpObjectId) { Stop-WithError "no service principal for ${ClientId}: the app registration is not provisioned yet" }
    }
    if ($Method -eq 'rbac') {
        $tenantWide = Invoke-Az @('rest', '--method', 'get', '--url',
            "https://graph.microsoft.com/v1.0/servicePrincipals/$SpObjectId/appRoleAssignments",
            '--query', "value[?appRoleId=='$RoleCalendarsReadWrite'].id", '-o', 'tsv')
        if ($tenantWide) {
            Stop-WithError 'the app holds Calendars.ReadWrite tenant-wide in Entra ID, so a scope would not narrow anything: remove that grant, or use -Method policy'
        }
    }
}

# ---- Exchange side ----
# Each Exchange call goes through Invoke-Exchange: printed, then run unless -DryRun. Reads return
# nothing in a dry run, so it shows the calls of a first-time set-up.
function Invoke-Exchange([string] $Line, [scriptblock] $Action) {
    Show-Call $Line
    if ($DryRun) { return $null }
    return (& $Action)
}

if (-not $DryRun) {
    if (-not (Get-Module -ListAvailable -Name ExchangeOnlineManagement)) {
        Stop-WithError 'PowerShell module ExchangeOnlineManagement is missing: Install-Module ExchangeOnlineManagement -Scope CurrentUser'
    }
    Import-Module ExchangeOnlineManagement
}
$connect = @{ ShowBanner = $false }
if ($Admin) { $connect.UserPrincipalName = $Admin }
Invoke-Exchange "Connect-ExchangeOnline -ShowBanner:`$false$(if ($Admin) { " -UserPrincipalName '$Admin'" })" { Connect-ExchangeOnline @connect } | Out-Null
try {
    try {
        Invoke-Exchange "Get-ManagementRole -Identity '$ExchangeRole'" { Get-ManagementRole -Identity $ExchangeRole } | Out-Null
    } catch {
        throw "cannot read Exchange roles: sign in as a member of Organization Management (or an Exchange Administrator). $_"
    }

    if ($Group) {
        $groupObject = Invoke-Exchange "Get-DistributionGroup -Identity '$Group'" { Get-DistributionGroup -Identity $Group }
        $groupDn = '<group distinguished name>'
        if ($groupObject) {
            if ($groupObject.RecipientTypeDetails -ne 'MailUniversalSecurityGroup') {
                throw "'$Group' is a $($groupObject.RecipientTypeDetails); it must be a mail-enabled security group"
            }
            $groupDn = $groupObject.DistinguishedName
        }
        if ($Method -eq 'rbac') {
            # Exchange's pointer to the Entra service principal (the enterprise application).
            $sp = Invoke-Exchange "Get-ServicePrincipal -Identity '$ClientId'" { Get-ServicePrincipal -Identity $ClientId -ErrorAction SilentlyContinue }
            if (-not $sp) {
                Invoke-Exchange "New-ServicePrincipal -AppId '$ClientId' -ObjectId '$SpObjectId' -DisplayName '$Name'" {
                    New-ServicePrincipal -AppId $ClientId -ObjectId $SpObjectId -DisplayName $Name
                } | Out-Null
            }
            # The mailboxes: direct members of the group.
            $filter = "MemberOfGroup -eq '$groupDn'"
            $scope = Invoke-Exchange "Get-ManagementScope -Identity '$Name'" { Get-ManagementScope -Identity $Name -ErrorAction SilentlyContinue }
            if (-not $scope) {
                Invoke-Exchange "New-ManagementScope -Name '$Name' -RecipientRestrictionFilter `"$filter`"" {
                    New-ManagementScope -Name $Name -RecipientRestrictionFilter $filter
                } | Out-Null
            } elseif ($scope.RecipientFilter -ne $filter) {
                # Exchange may store the filter normalised; setting the same filter again is harmless.
                Invoke-Exchange "Set-ManagementScope -Identity '$Name' -RecipientRestrictionFilter `"$filter`"" {
                    Set-ManagementScope -Identity $Name -RecipientRestrictionFilter $filter
                } | Out-Null
            }
            # The permission, limited to the scope.
            $assignment = "$Name-calendars"
            $existing = Invoke-Exchange "Get-ManagementRoleAssignment -Identity '$assignment'" { Get-ManagementRoleAssignment -Identity $assignment -ErrorAction SilentlyContinue }
            if (-not $existing) {
                Invoke-Exchange "New-ManagementRoleAssignment -Name '$assignment' -App '$ClientId' -Role '$ExchangeRole' -CustomResourceScope '$Name'" {
                    New-ManagementRoleAssignment -Name $assignment -App $ClientId -Role $ExchangeRole -CustomResourceScope $Name
                } | Out-Null
            } else {
                Invoke-Exchange "Set-ManagementRoleAssignment -Identity '$assignment' -CustomResourceScope '$Name'" {
                    Set-ManagementRoleAssignment -Identity $assignment -CustomResourceScope $Name
                } | Out-Null
            }
        } else {
            $policies = @(Invoke-Exchange 'Get-ApplicationAccessPolicy' { Get-ApplicationAccessPolicy | Where-Object { $_.AppId -eq $ClientId } })
            $policies = @($policies | Where-Object { $_ })
            $current = $policies.Count -eq 1 -and $groupObject -and
                ($policies[0].ScopeName -eq $groupObject.Name -or $policies[0].ScopeIdentity -eq $groupObject.Identity)
            if (-not $current) {
                # A policy's group cannot be changed: replace whatever this app has.
                foreach ($policy in $policies) {
                    Invoke-Exchange "Remove-ApplicationAccessPolicy -Identity '$($policy.Identity)' -Confirm:`$false" {
                        Remove-ApplicationAccessPolicy -Identity $policy.Identity -Confirm:$false
                    } | Out-Null
                }
                Invoke-Exchange "New-ApplicationAccessPolicy -AppId '$ClientId' -PolicyScopeGroupId '$Group' -AccessRight RestrictAccess" {
                    New-ApplicationAccessPolicy -AppId $ClientId -PolicyScopeGroupId $Group -AccessRight RestrictAccess -Description 'calendar-sync: only the mapped mailboxes'
                } | Out-Null
            }
        }
    }

    $checks = @($Test | ForEach-Object { @{ Mailbox = $_; Expected = $true } }) +
        @($ExpectDenied | ForEach-Object { @{ Mailbox = $_; Expected = $false } })
    foreach ($check in $checks) {
        $mailbox = $check.Mailbox
        if ($Method -eq 'rbac') {
            $result = Invoke-Exchange "Test-ServicePrincipalAuthorization -Identity '$ClientId' -Resource '$mailbox'" {
                Test-ServicePrincipalAuthorization -Identity $ClientId -Resource $mailbox | Where-Object { $_.RoleName -eq $ExchangeRole }
            }
            if ($DryRun) { continue }
            $inScope = [bool]($result | Where-Object { $_.InScope })
            $result | Format-Table RoleName, AllowedResourceScope, ScopeType, InScope | Out-Host
            if ($inScope -ne $check.Expected) { throw "${mailbox}: in scope is $inScope, expected $($check.Expected)" }
            Write-Output "ok: $mailbox in scope = $inScope"
        } else {
            $result = Invoke-Exchange "Test-ApplicationAccessPolicy -Identity '$mailbox' -AppId '$ClientId'" {
                Test-ApplicationAccessPolicy -Identity $mailbox -AppId $ClientId
            }
            if ($DryRun) { continue }
            $granted = $result.AccessCheckResult -eq 'Granted'
            if ($granted -ne $check.Expected) { throw "${mailbox}: access $($result.AccessCheckResult), expected granted = $($check.Expected)" }
            Write-Output "ok: $mailbox access = $($result.AccessCheckResult)"
        }
    }
} finally {
    Invoke-Exchange 'Disconnect-ExchangeOnline -Confirm:$false' { Disconnect-ExchangeOnline -Confirm:$false } | Out-Null
}
if (-not $DryRun) { Write-Step 'done; Exchange applies scope changes within 30 minutes to 2 hours' }
