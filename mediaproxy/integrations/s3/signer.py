"""SigV4 signatures (``sigv4``) and the credentials behind them, from botocore's chain.

botocore's credential chain (environment, shared credentials and config files, container and
instance metadata, SSO and assume-role profiles) is what the AWS CLI and boto3 use: the
well-trodden path. It is imported when a route without keys of its own is built; a route whose
keys come from the variables it names signs without it.

Credentials that expire (an instance role, an assumed role) are ``RefreshableCredentials``:
botocore refreshes them ahead of expiry, but does so by blocking on the network. That is
never done on the event loop: the chain is resolved, and a refresh that is due is run, on a
one-thread pool of its own; a request that finds credentials still fresh signs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mediaproxy.errors import UpstreamError
from mediaproxy.integrations.s3.settings import S3Settings
from mediaproxy.integrations.s3.sigv4 import EMPTY_PAYLOAD_SHA256, Credentials, SigV4, amz_date
from mediaproxy.streaming.threads import LazyPool

log = logging.getLogger("mediaproxy")

# Resolving the chain and refreshing credentials: rare, and one at a time is enough.
_credential_pool = LazyPool(1, "s3-credentials")
CHAIN = "the AWS credential chain (AWS_ACCESS_KEY_ID, ~/.aws, container or instance role)"


class Signer:
    """Signs requests to one route's store with the route's credentials."""

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._sigv4 = SigV4(settings.region, "s3")
        self._static: Credentials | None = None
        self._chain: Any = None  # botocore Credentials, once resolved
        self._refreshable_class: Any = None
        self._pending: dict[str, asyncio.Future[Any]] = {}  # "resolve" or "refresh"
        keys = settings.keys
        self.source = keys.source if keys is not None else CHAIN
        if keys is not None:
            self._static = Credentials(
                keys.access_key_id, keys.secret_access_key, keys.session_token
            )
        else:
            # botocore is imported here, when a route needs its chain, not with this module.
            from botocore.credentials import RefreshableCredentials

            self._refreshable_class = RefreshableCredentials

    async def sign(self, method: str, target: str, fields: list[tuple[str, str]]) -> None:
        """Append X-Amz-Date, X-Amz-Content-SHA256, the security token and Authorization.

        Every field already in ``fields`` is signed, Host included, exactly as it will be
        sent; a body-less request signs the empty body's hash.
        """
        credentials = self._static or await self._chain_credentials()
        date_time = amz_date(time.time())
        fields.append(("X-Amz-Date", date_time))
        fields.append(("X-Amz-Content-SHA256", EMPTY_PAYLOAD_SHA256))
        if credentials.session_token:
            fields.append(("X-Amz-Security-Token", credentials.session_token))
        path, _, query = target.partition("?")
        authorization = self._sigv4.authorization(
            credentials, method, path, query, fields, EMPTY_PAYLOAD_SHA256, date_time
        )
        fields.append(("Authorization", authorization))

    async def _chain_credentials(self) -> Credentials:
        chain = self._chain
        if chain is None:
            chain = await self._resolve()
        if isinstance(chain, self._refreshable_class) and chain.refresh_needed():
            try:
                frozen = await self._on_pool("refresh", chain.get_frozen_credentials)
            except Exception as error:  # botocore's refresh may fail in any way
                log.warning(
                    "s3 bucket %s: refreshing the credentials from %s failed: %s",
                    self._settings.bucket,
                    self.source,
                    error,
                )
                raise UpstreamError(f"credential refresh failed: {error}") from error
        else:
            frozen = chain.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

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
        self._chain = credentials
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
