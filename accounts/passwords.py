"""Password policy for new passwords: long enough, not the username, not a common one.

Applies where a password is chosen (creating a user, changing or resetting a password),
never to logging in: existing accounts, the demo users among them, keep working.
"""

from __future__ import annotations

from accounts.errors import ValidationError

#: At least this many characters (NIST SP 800-63B asks for 8; we ask for more, and
#: nothing else: no composition rules).
MIN_LENGTH = 10

#: The most used passwords of ten characters or more, in leaked lists and in China.
#: Shorter ones are refused by the length already.
COMMON = frozenset("""
1234567890 0123456789 12345678910 123456789a a123456789 1234567890a qwertyuiop 1q2w3e4r5t
1qaz2wsx3edc qazwsxedcrfv password12 password123 password1234 passw0rd123 iloveyou123
11111111111 1111111111 0000000000 00000000000 2222222222 8888888888 6666666666 9999999999
1234512345 1122334455 woaini1314 woaini520 5201314520 1314520520 abc1234567 abcd123456
abcdefghij qwerty1234 qwerty12345 qwertyuiop1 asdfghjkl1 zxcvbnm123 1234qwer1234 admin12345
admin123456 administrator root123456 welcome123 letmein123 changeme123 p@ssw0rd123
password!! passwordpassword 123456789abc 12345678900 9876543210 0987654321 123123123123
123321123321 147258369a 1472583690 qazwsx123456 aa123456789 a1234567890 zhang123456
wang1234567 li123456789 dangyuan123 yuanjiao123 yuanjiao2026 123456abcdef abc123456789
123456qwerty 1234567890qwe
""".split())  # noqa: SIM905 (a list to read and extend)


def check_new_password(password: str | None, username: str | None) -> None:
    """Refuse a weak new password with a ValidationError on the field `password`."""
    password = password or ""
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"密码至少 {MIN_LENGTH} 位", field="password",
                              code="weak_password", details={"min_length": MIN_LENGTH})
    lowered = password.lower()
    name = (username or "").strip().lower()
    if name and (lowered == name or (len(name) >= 3 and name in lowered)):
        raise ValidationError("密码不能包含用户名", field="password", code="weak_password")
    if lowered in COMMON or len(set(lowered)) <= 2:
        raise ValidationError("密码太常见，请换一个", field="password", code="weak_password")
