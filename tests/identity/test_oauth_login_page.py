"""The sign-in page of the authorization endpoint: languages, accessibility, uniform errors, lockout,
CSRF protection of the form, the institution choice and the TOTP steps."""

import re
import time

import httpx
import pyotp
import pytest

from api.settings import Settings
from compliance.identity import totp
from compliance.identity.access_tokens import verify_access_token
from compliance.identity.account_models import UserAccount
from compliance.identity.accounts import WRONG_CREDENTIALS
from compliance.identity.authorization_models import AuthEvent, AuthEventKind
from compliance.identity.client_models import OAuthClient
from compliance.identity.login_throttle import LoginThrottle
from compliance.principals import StaffRole
from schema.i18n import translate
from tests.conftest import World
from tests.identity.oauth_support import (
    AUTHORIZE,
    PASSWORD,
    Authorization,
    alert_of,
    exchange,
    pkce,
    post_step,
    query_of,
    sign_in,
    staff_account,
    transaction_of,
)

pytestmark = pytest.mark.usefixtures("sign_in_throttle")


async def open_page(
    http: httpx.AsyncClient, client: OAuthClient, **headers: str
) -> tuple[httpx.Response, str]:
    verifier, challenge = pkce()
    page = await http.get(
        AUTHORIZE, params=Authorization(client.client_id).params(challenge), headers=headers
    )
    assert page.status_code == 200, page.text
    return page, verifier


async def test_the_page_is_chinese_by_default_and_english_on_request(
    client: httpx.AsyncClient, public_client: OAuthClient
) -> None:
    page, _ = await open_page(client, public_client)
    assert '<html lang="zh-CN">' in page.text and "<h1>登录颐养</h1>" in page.text
    assert "密码" in page.text and "Password" not in page.text
    assert page.headers["content-language"] == "zh-CN"

    english, _ = await open_page(client, public_client, **{"Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"})
    assert '<html lang="en">' in english.text and "<h1>Sign in to Yiyang</h1>" in english.text

    _, challenge = pkce()
    params = Authorization(public_client.client_id).params(challenge, ui_locales="en")
    asked = await client.get(AUTHORIZE, params=params, headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in asked.text
    # The language link switches the other way and keeps the request.
    link = re.search(r'<a href="([^"]+)" lang="zh-CN"', asked.text)
    assert link and "ui_locales=zh-CN" in link.group(1) and "code_challenge=" in link.group(1)


async def test_the_page_is_accessible_and_self_contained(
    client: httpx.AsyncClient, public_client: OAuthClient
) -> None:
    page, _ = await open_page(client, public_client)
    html = page.text
    for field in ("login", "password"):
        assert f'<label for="{field}">' in html and f'id="{field}"' in html
    assert 'role="alert"' in html and ":focus-visible{outline:3px" in html
    assert 'autocomplete="username"' in html and 'autocomplete="current-password"' in html
    assert "<script" not in html and "<link" not in html and " src=" not in html
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    cookie = page.headers.get("set-cookie", "")
    if cookie:  # set on the first visit of this browser only
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


async def test_unknown_login_and_wrong_password_read_alike(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[1])
    page, _ = await open_page(client, public_client)
    transaction = transaction_of(page.text)
    wrong = await post_step(client, transaction, login=account.login, password="not-the-password")
    unknown = await post_step(
        client, transaction, login="nobody-here@example.com", password="not-the-password"
    )
    assert wrong.status_code == unknown.status_code == 200
    expected = translate(WRONG_CREDENTIALS, "zh_CN")
    assert expected != WRONG_CREDENTIALS  # translated
    assert alert_of(wrong.text) == alert_of(unknown.text) == expected
    assert 'aria-invalid="true"' in wrong.text
    # The login typed is kept; the password never comes back.
    assert f'value="{account.login}"' in wrong.text and "not-the-password" not in wrong.text
    empty = await post_step(client, transaction, login="", password="")
    assert alert_of(empty.text) == "请输入登录名和密码。"
    events = await AuthEvent.filter(client_id=public_client.client_id).values_list("kind", flat=True)
    assert sorted(str(kind) for kind in events) == ["login_failed", "login_failed"]


async def test_the_lockout_notice_tells_how_long_to_wait(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, sign_in_throttle: LoginThrottle
) -> None:
    account = await staff_account(world.institution_ids[1])
    page, _ = await open_page(client, public_client)
    transaction = transaction_of(page.text)
    notices = [
        alert_of(
            (await post_step(client, transaction, login=account.login, password="wrong-password-x")).text
        )
        for _ in range(3)  # the test throttle locks after 3 failures
    ]
    assert notices[0] == notices[1] != notices[2]
    assert notices[2] == "失败次数过多，请 15 分钟后再试。"
    # Even the right password is refused while locked, with the same notice.
    locked = await post_step(client, transaction, login=account.login, password=PASSWORD)
    assert alert_of(locked.text) == notices[2]
    kinds = (
        await AuthEvent.filter(client_id=public_client.client_id)
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert [str(kind) for kind in kinds] == [
        "login_failed",
        "login_failed",
        "login_locked_out",
        "login_locked_out",
    ]
    # Once the lockout is over (the throttle's clock moves), the password works.
    sign_in_throttle.clock.now += 15 * 60 + 1  # type: ignore[attr-defined]
    assert (await post_step(client, transaction, login=account.login, password=PASSWORD)).status_code == 302


async def test_a_tampered_or_foreign_transaction_is_refused(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, app: object
) -> None:
    account = await staff_account(world.institution_ids[1])
    page, _ = await open_page(client, public_client)
    transaction = transaction_of(page.text)
    flipped = transaction[:-5] + ("A" if transaction[-5] != "A" else "B") + transaction[-4:]
    for forged in (flipped, "", "not-a-transaction", transaction[:40]):
        refused = await post_step(client, forged, login=account.login, password=PASSWORD)
        assert refused.status_code == 400 and "location" not in refused.headers
        assert alert_of(refused.text) == "此登录页面已过期或无效，请返回应用重新开始。"
    # Another browser (no cookie, or its own cookie) cannot post this browser's transaction: CSRF.
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://yiyang.test") as other:
        refused = await post_step(other, transaction, login=account.login, password=PASSWORD)
        assert refused.status_code == 400
        await other.get(AUTHORIZE, params=Authorization(public_client.client_id).params(pkce()[1]))
        assert other.cookies.get("yiyang_signin")
        refused = await post_step(other, transaction, login=account.login, password=PASSWORD)
        assert refused.status_code == 400
    not_a_form = await client.post(AUTHORIZE, json={"transaction": transaction})
    assert not_a_form.status_code == 400
    # The real browser still signs in, once: a replayed final POST issues no second code.
    signed_in = await post_step(client, transaction, login=account.login, password=PASSWORD)
    assert signed_in.status_code == 302 and "code" in query_of(signed_in.headers["location"])
    replay = await post_step(client, transaction, login=account.login, password=PASSWORD)
    assert replay.status_code == 400 and "location" not in replay.headers


async def test_broken_requests_get_a_page_not_a_trace(
    client: httpx.AsyncClient, public_client: OAuthClient
) -> None:
    _, challenge = pkce()
    base = Authorization(public_client.client_id).params(challenge)
    repeated = "&".join(f"{k}={v}" for k, v in base.items()) + f"&client_id={public_client.client_id}"
    for query in (repeated, "", "client_id=%FF%FE", "x=" + "a" * 5000):
        response = await client.get(f"{AUTHORIZE}?{query}")
        assert response.status_code in (302, 400), response.text
        assert "Traceback" not in response.text
        if response.status_code == 400:
            assert response.headers["content-type"].startswith("text/html")
    response = await client.put(AUTHORIZE)
    assert response.status_code == 405


async def test_a_staff_member_of_several_institutions_chooses_one(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, settings: Settings
) -> None:
    first, second = world.institution_ids[7], world.institution_ids[8]
    account = await staff_account(first, second, role=StaffRole.DOCTOR)
    verifier, challenge = pkce()
    params = Authorization(public_client.client_id).params(challenge)
    choice = await sign_in(client, params, account.login)
    assert choice.status_code == 200 and "<h1>选择机构</h1>" in choice.text
    assert f'value="{first}"' in choice.text and f'value="{second}"' in choice.text
    assert "测试养老院07" in choice.text and "测试养老院08" in choice.text
    transaction = transaction_of(choice.text)
    for bad in ("", "abc", str(world.institution_ids[9]), "99999999999999999999"):
        refused = await post_step(client, transaction, institution=bad)
        assert refused.status_code == 400 and alert_of(refused.text) == "请选择机构。"
    chosen = await post_step(client, transaction, institution=str(second))
    assert chosen.status_code == 302, chosen.text
    tokens = (
        await exchange(
            client, public_client.client_id, query_of(chosen.headers["location"])["code"], verifier
        )
    ).json()
    claims = await verify_access_token(tokens["access_token"], issuer=settings.issuer)
    assert claims.institution_id == second and claims.roles == frozenset({StaffRole.DOCTOR})
    issued = await AuthEvent.get(account_id=account.id, kind=AuthEventKind.TOKEN_ISSUED)
    assert issued.institution_id == second


def _key_of(html: str) -> str:
    found = re.search(r'<span class="key">([A-Z2-7 ]+)</span>', html)
    assert found, html
    return found.group(1).replace(" ", "")


async def test_an_institution_requiring_totp_makes_staff_enrol_then_verify(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    institution = world.institution_ids[10]
    account = await staff_account(institution, role=StaffRole.NURSE)
    await totp.set_institution_requires_totp(institution, True)
    try:
        _, challenge = pkce()
        enrol = await sign_in(client, Authorization(public_client.client_id).params(challenge), account.login)
        assert enrol.status_code == 200 and "<h1>设置二次验证</h1>" in enrol.text
        assert (
            '<label for="code">验证码</label>' in enrol.text and 'autocomplete="one-time-code"' in enrol.text
        )
        secret = _key_of(enrol.text)
        transaction = transaction_of(enrol.text)
        wrong = await post_step(
            client, transaction, code="000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
        )
        assert wrong.status_code == 200 and alert_of(wrong.text) == "验证码错误或已过期。"
        assert _key_of(wrong.text) == secret  # shown again: the user may not have added it yet
        confirmed = await post_step(client, transaction, code=pyotp.TOTP(secret).now())
        assert confirmed.status_code == 302, confirmed.text

        # Next sign-in: a code is asked for; one of the next time step (the current one is spent).
        _, challenge = pkce()
        verify = await sign_in(
            client, Authorization(public_client.client_id).params(challenge), account.login
        )
        assert "<h1>二次验证</h1>" in verify.text and 'class="key"' not in verify.text
        transaction = transaction_of(verify.text)
        replayed = await post_step(client, transaction, code=pyotp.TOTP(secret).now())
        assert replayed.status_code == 200 and alert_of(replayed.text) == "验证码错误或已过期。"
        accepted = await post_step(client, transaction, code=pyotp.TOTP(secret).at(time.time() + 30))
        assert accepted.status_code == 302, accepted.text
    finally:
        await totp.set_institution_requires_totp(institution, False)
    kinds = await AuthEvent.filter(account_id=account.id).order_by("id").values_list("kind", flat=True)
    assert [str(kind) for kind in kinds] == [
        "login_succeeded",
        "second_factor_failed",
        "second_factor_enrolled",
        "login_succeeded",
        "second_factor_failed",
    ]


async def test_a_disabled_account_cannot_finish_signing_in(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    first, second = world.institution_ids[7], world.institution_ids[8]
    account = await staff_account(first, second)
    _, challenge = pkce()
    choice = await sign_in(client, Authorization(public_client.client_id).params(challenge), account.login)
    await UserAccount.filter(id=account.id).update(status="disabled")
    refused = await post_step(client, transaction_of(choice.text), institution=str(first))
    assert refused.status_code == 400 and "location" not in refused.headers
