"""SigV4 signatures and the credentials behind them, from botocore.

botocore is what the AWS CLI and boto3 sign with, so its ``S3SigV4Auth`` and its credential
chain (environment, shared credentials and config files, container and instance metadata,
SSO and assume-role profiles) are the well-trodden path; nothing here is hand-written crypto.
It is imported when the first s3 route is built, never by a gateway without one.

Credentials that expire (an instance role, an assumed role) are ``RefreshableCredentials``:
botocore refreshes them ahead of expiry, but does so by blocking on the network. That is
never done on the event loop: the chain is resolved, and a refresh that is due is run, on a
one-thread pool of its own; a request that finds credentials still fresh signs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado.httputil import HTTPHeaders

from mediaproxy.errors import UpstreamError
from mediaproxy.integrations.s3.settings import S3Settings
from mediaproxy.streaming.threads import LazyPool

log = logging.getLogger("mediaproxy")

# Resolving the chain and refreshing credentials: rare, and one at a time is enough.
_credential_pool = LazyPool(1, "s3-credentials")
CHAIN = "the AWS credential chain (AWS_ACCESS_KEY_ID, ~/.aws, container or instance role)"


class Signer:
    """Signs requests to one route's store with the route's credentials."""

    def __init__(self, settings: S3Settings) -> None:
        # botocore is imported here, when an s3 route is built, not with this module's caller.
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials, RefreshableCredentials

        self._auth_class = S3SigV4Auth
        self._request_class = AWSRequest
        self._refreshable_class = RefreshableCredentials
        self._settings = settings
        self._credentials: Any = None  # botocore Credentials, once resolved
        self._pending: dict[str, asyncio.Future[Any]] = {}  # "resolve" or "refresh"
        keys = settings.keys
        self.source = keys.source if keys is not None else CHAIN
        if keys is not None:
            self._credentials = Credentials(
                keys.access_key_id,
                keys.secret_access_key,
                keys.session_token,
                method="mediaproxy-route",
            )

    async def sign(self, method: str, target: str, headers: HTTPHeaders) -> None:
        """Add X-Amz-Date, X-Amz-Content-SHA256, the security token and Authorization.

        Every header already in ``headers`` is signed, Host included, exactly as it will be
        sent; a body-less request signs the empty body's hash.
        """
        credentials = await self._frozen_credentials()
        request = self._request_class(
            method, self._settings.url_base + target, headers=dict(headers.get_all())
        )
        self._auth_class(credentials, "s3", self._settings.region).add_auth(request)
        for name in ("X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token", "Authorization"):
            if name in request.headers:
                headers[name] = request.headers[name]

    async def _frozen_credentials(self) -> Any:
        credentials = self._credentials
        if credentials is None:
            credentials = await self._resolve()
        if isinstance(credentials, self._refreshable_class) and credentials.refresh_needed():
            try:
                return await self._on_pool("refresh", credentials.get_frozen_credentials)
            except Exception as error:  # botocore's refresh may fail in any way
                log.warning(
                    "s3 bucket %s: refreshing the credentials from %s failed: %s",
                    self._settings.bucket,
                    self.source,
                    error,
                )
                raise UpstreamError(f"credential refresh failed: {error}") from error
        return credentials.get_frozen_credentials()

    async def _resolve(self) -> Any:
        """The chain's credentials (a failure is tried again by the next request)."""
        try:
            credentials = await self._on_pool("resolve", _resolve_chain)
        except Exception as error:  # a malformed ~/.aws/config, an unreachable role, ...
            log.warning(
                "s3 bucket %s: resolving %s failed: %s", self._settings.bucket, CHAIN, error
            )
            raise UpstreamError(f"no AWS credentials: {error}") from error
        if credentials is None:
            log.warning(
                "s3 bucket %s: no credentials found in %s; set them there, or set the "
                "route's access_key_id_env and secret_access_key_env",
                self._settings.bucket,
                CHAIN,
            )
            raise UpstreamError("no AWS credentials")
        self._credentials = credentials
        return credentials

    async def _on_pool(self, kind: str, function: Callable[[], Any]) -> Any:
        """``function`` on the credential thread; concurrent requests share one call of it."""
        pending = self._pending.get(kind)
        if pending is None:
            pending = asyncio.wrap_future(_credential_pool.get().submit(function))
            self._pending[kind] = pending

            def forget(done: asyncio.Future[Any]) -> None:
                del self._pending[kind]
                if not done.cancelled():
                    done.exception()  # every waiter may have left: nobody else would look

            pending.add_done_callback(forget)
        # A request that leaves (a timer, its client) must not cancel the others' call.
        return await asyncio.shield(pending)


def _resolve_chain() -> Any:
    """botocore's default chain, as the AWS CLI resolves it (this blocks: run on the pool)."""
    import botocore.session

    return botocore.session.get_session().get_credentials()
