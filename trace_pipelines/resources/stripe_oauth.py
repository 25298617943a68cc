"""Stripe Connect OAuth: the only two calls Trace ever sends to Stripe that are not reads.

Connecting a site exchanges the authorization code for the connected account id
(`POST /oauth/token`), and disconnecting revokes Trace's access (`POST /oauth/deauthorize`).
Both change the platform's own grant, never the site owner's data, which is why they live
here, apart from the read-only `stripe_reader` resource, and nothing else here can write.

Settings come from the environment: STRIPE_API_KEY (the platform's secret key),
STRIPE_CLIENT_ID (the platform's `ca_...` id) and STRIPE_CONNECT_BASE (where OAuth is served;
default https://connect.stripe.com, the local sandbox in tests and demos).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import stripe

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_BASE = "https://connect.stripe.com"
READ_ONLY_SCOPE = "read_only"


class StripeOAuthError(Exception):
    """An OAuth call that failed; the message says why and is safe to show to the owner."""


@dataclass(frozen=True)
class StripeOAuth:
    """The platform's OAuth client: authorize URL, code exchange and deauthorization."""

    api_key: str
    client_id: str
    connect_base: str = DEFAULT_CONNECT_BASE
    timeout_seconds: float = 30.0

    @classmethod
    def from_env(cls) -> StripeOAuth:
        """Built from STRIPE_API_KEY, STRIPE_CLIENT_ID and STRIPE_CONNECT_BASE."""
        api_key = os.environ.get("STRIPE_API_KEY", "")
        client_id = os.environ.get("STRIPE_CLIENT_ID", "")
        if not api_key:
            raise StripeOAuthError(
                "STRIPE_API_KEY is not set: set it to the platform's secret key to use Stripe "
                "Connect."
            )
        if not client_id.startswith("ca_"):
            raise StripeOAuthError(
                "STRIPE_CLIENT_ID is not set to a Connect client id (ca_...): copy it from the "
                "Stripe dashboard under Settings > Connect > Onboarding options > OAuth."
            )
        base = os.environ.get("STRIPE_CONNECT_BASE") or DEFAULT_CONNECT_BASE
        return cls(api_key=api_key, client_id=client_id, connect_base=base)

    def _client(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            self.api_key,
            client_id=self.client_id,
            base_addresses={"connect": self.connect_base.rstrip("/")},
            # A code works once: a retried exchange after a lost answer would fail anyway.
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=self.timeout_seconds),
        )

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Stripe's consent page for a read-only connection returning to `redirect_uri`."""
        return self._client().oauth.authorize_url(
            {
                "response_type": "code",
                "scope": READ_ONLY_SCOPE,
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )

    def exchange_code(self, code: str) -> str:
        """The connected account id (`stripe_user_id`) the authorization `code` grants."""
        try:
            token = self._client().oauth.token({"grant_type": "authorization_code", "code": code})
        except stripe.oauth_error.OAuthError as error:
            logger.warning("Stripe refused the OAuth code exchange: %s", error.code)
            raise StripeOAuthError(
                "Stripe did not accept the authorization (it may have expired or been used "
                "already). Connect again from Settings > Connect Stripe."
            ) from None
        except stripe.StripeError as error:
            logger.warning("Stripe OAuth code exchange failed: %s", type(error).__name__)
            raise StripeOAuthError(
                "Stripe could not be reached to finish connecting. Try again in a minute."
            ) from None
        account = token.to_dict().get("stripe_user_id")
        if not isinstance(account, str) or not account.startswith("acct_"):
            raise StripeOAuthError("Stripe's answer named no connected account. Try again.")
        return account

    def deauthorize(self, account_id: str) -> bool:
        """Revoke Trace's access to `account_id`; False when it had no access already."""
        try:
            self._client().oauth.deauthorize({"stripe_user_id": account_id})
        except stripe.oauth_error.InvalidClientError as error:
            # Stripe's answer when the account already disconnected the platform.
            logger.info("Account %s was not connected to the platform: %s", account_id, error)
            return False
        except stripe.StripeError as error:
            raise StripeOAuthError(
                f"Stripe could not revoke Trace's access to {account_id} "
                f"({type(error).__name__}); nothing was changed. Try again in a minute."
            ) from None
        return True
