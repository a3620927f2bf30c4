"""Login throttling in Redis: per login and per client address, shared by every API process.

Each attempt reserves its place BEFORE the password is checked, in one Lua script (atomic on the
server): concurrent attempts therefore cannot all pass a "fewer than N failures so far?" check and
then all verify. An attempt counts as a failure until it succeeds; success forgets the login's
failures (and takes the attempt back from the address's count). Counts are sliding windows: sorted
sets of attempt times, scored with the caller's clock, so tests move time instead of sleeping; Redis
TTLs only collect the garbage.

Keys hold a hash of the login, never the login itself (an e-mail or a phone number), and the lockout
applies to unknown logins exactly as to known ones, so the notice reveals nothing about existence.
"""

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis


class LockScope(StrEnum):
    ACCOUNT = "account"  # this login had too many failures
    ADDRESS = "address"  # this client address had too many failures, whatever the logins


@dataclass(frozen=True, slots=True)
class Lockout:
    """What a refused sign-in may show: who is locked and for how long."""

    scope: LockScope
    retry_after_seconds: int


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    account_failures: int = 5
    address_failures: int = 20
    window_seconds: float = 15 * 60
    lockout_seconds: float = 15 * 60


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved attempt: pass it back to `succeeded` or `failed`."""

    login_key: str
    address_key: str
    token: str


# KEYS: login log, login lock, address log. ARGV: now ms, window ms, login limit, lockout ms,
# address limit, attempt token. Returns {0, 0} (go ahead), {1, ms} (login locked) or {2, ms} (address).
_RESERVE = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local locked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if locked_until > now then return {1, locked_until - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return {2, math.max(1, tonumber(oldest[2]) + window - now)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local lockout = tonumber(ARGV[4])
  redis.call('SET', KEYS[2], now + lockout, 'PX', lockout)
  redis.call('DEL', KEYS[1])
  return {1, lockout}
end
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('ZADD', KEYS[3], now, ARGV[6])
redis.call('PEXPIRE', KEYS[3], window)
return {0, 0}
"""

# KEYS: login log, login lock. ARGV: now ms, window ms, login limit, lockout ms.
# The failure is already counted (reserved); lock as soon as the limit is reached, so the attempt that
# reaches it can already tell the user. Returns the lockout left in ms, 0 if not locked.
_FAILED = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local locked_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if locked_until > now then return locked_until - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local lockout = tonumber(ARGV[4])
  redis.call('SET', KEYS[2], now + lockout, 'PX', lockout)
  redis.call('DEL', KEYS[1])
  return lockout
end
return 0
"""

# KEYS: login log, address log. ARGV: attempt token.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"""


class LoginThrottle:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "yiyang:login",
        policy: ThrottlePolicy = ThrottlePolicy(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.policy = policy
        self.clock = clock
        self._reserve = redis.register_script(_RESERVE)
        self._failed = redis.register_script(_FAILED)
        self._succeeded = redis.register_script(_SUCCEEDED)

    def _login_key(self, login: str) -> str:
        digest = hashlib.sha256(login.strip().casefold().encode()).hexdigest()[:32]
        return f"{self.prefix}:login:{digest}"

    def _address_key(self, address: str) -> str:
        return f"{self.prefix}:addr:{address[:64]}"

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def reserve(self, login: str, address: str) -> Attempt | Lockout:
        """An attempt that may go on to check the password, or the lockout that refuses it."""
        attempt = Attempt(self._login_key(login), self._address_key(address), secrets.token_hex(8))
        outcome, left_ms = await self._reserve(
            keys=[attempt.login_key, f"{attempt.login_key}:lock", attempt.address_key],
            args=[
                self._now_ms(),
                int(self.policy.window_seconds * 1000),
                self.policy.account_failures,
                int(self.policy.lockout_seconds * 1000),
                self.policy.address_failures,
                attempt.token,
            ],
        )
        if outcome == 0:
            return attempt
        scope = LockScope.ACCOUNT if outcome == 1 else LockScope.ADDRESS
        return Lockout(scope, _seconds(left_ms))

    async def failed(self, attempt: Attempt) -> Lockout | None:
        """Record that the attempt failed; the lockout it caused, if it reached the limit."""
        left_ms = await self._failed(
            keys=[attempt.login_key, f"{attempt.login_key}:lock"],
            args=[
                self._now_ms(),
                int(self.policy.window_seconds * 1000),
                self.policy.account_failures,
                int(self.policy.lockout_seconds * 1000),
            ],
        )
        return Lockout(LockScope.ACCOUNT, _seconds(left_ms)) if left_ms else None

    async def succeeded(self, attempt: Attempt) -> None:
        await self._succeeded(keys=[attempt.login_key, attempt.address_key], args=[attempt.token])


def _seconds(milliseconds: int) -> int:
    return max(1, math.ceil(int(milliseconds) / 1000))
