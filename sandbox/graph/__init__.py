"""The simulated Microsoft Graph v1.0."""

from __future__ import annotations

from sandbox.graph import batch_routes, calendar_routes, directory_routes, subscription_routes
from sandbox.graph.core import Ctx, GraphApi
from sandbox.graph.subscription_routes import Subscriptions
from sandbox.limits import Faults, Throttle
from sandbox.notifications import Notifier
from sandbox.requestlog import RequestLog
from sandbox.state import Tenant
from sandbox.tokens import TokenIssuer

__all__ = ["Ctx", "GraphApi", "Subscriptions", "build_graph"]


def build_graph(
    tenant: Tenant,
    issuer: TokenIssuer,
    throttle: Throttle,
    faults: Faults,
    log: RequestLog,
    notifier: Notifier,
) -> tuple[GraphApi, Subscriptions]:
    api = GraphApi(tenant, issuer, throttle, faults, log)
    subscriptions = Subscriptions(tenant, notifier)
    calendar_routes.register(api)
    directory_routes.register(api)
    subscription_routes.register(api, subscriptions)
    batch_routes.register(api)
    return api, subscriptions
