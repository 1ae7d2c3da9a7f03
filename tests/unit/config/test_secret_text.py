"""Secrets inside free text from elsewhere (a library's exception, a proxy's or Pisano's error body)
are masked wherever they stand and however the text escapes them: JSON-escaped or percent-encoded
URLs, scheme-less `//user:pw@host`, and `key: value` pairs under a secret-bearing name. Found in
review; each case failed before the fix. What is not secret (hosts, ports, paths, ordinary words)
stays readable."""

import logging
import sys

import pytest

from consumer.config.secrets import mask_urls_in_text
from consumer.operations.logs import JsonFormatter, TextFormatter
from consumer.outcomes.deadletter import error_text

JSON_ESCAPED = [
    ('{"detail":"proxy refused https:\\/\\/user:Sx-1@gw.bank.test\\/v1"}',
     '{"detail":"proxy refused https:\\/\\/***@gw.bank.test\\/v1"}'),
    # A raw `/` in the password (`\/` once escaped): where it ends is unknown, all of it goes.
    ('"https:\\/\\/u:pa\\/Sx-1@h\\/v1"', '"https:\\/\\/***"'),
    # A JSON string inside a JSON string escapes the slash twice.
    ('"redis:\\\\\\/\\\\\\/u:Sx-1@cache:6379"', '"redis:\\\\\\/\\\\\\/***@cache:6379"'),
]

PERCENT_ENCODED = [
    ("next=https%3A%2F%2Fuser%3ASx-1%40gw.bank.test%2Fv1&lang=tr",
     "next=https%3A%2F%2F***%40gw.bank.test%2Fv1&lang=tr"),
    # (what the mask left alone is written back as written: in lower case here)
    ("next=https%3a%2f%2fuser%3aSx-1%40gw.bank.test", "next=https%3a%2f%2f***%40gw.bank.test"),
    # Python's quote() leaves the slashes as they are (and so does the masked text, since the
    # review of the eighth: a sign written raw is written back raw).
    ("url=https%3A//user%3ASx-1%40gw.bank.test/v1", "url=https%3A//***%40gw.bank.test/v1"),
    ("u=https%3A%2F%2Fh%2Fx%3Fpassword%3DSx-1", "u=https%3A%2F%2Fh%2Fx%3Fpassword%3D***"),
    ("u=https%3A%2F%2Fu%3Apa%2FSx-1%40h", "u=https%3A%2F%2F***"),
    ("u=https%253A%252F%252Fu%253ASx-1%2540h", "u=https%253A%252F%252F***%2540h"),  # encoded twice
    # Second review: encoded by a quote() that leaves `:` or `@` raw (safe=":" or "@"), so a raw
    # `:` or `@` cut the run in two and neither half held the whole URL.
    ("u=https%3A%2F%2Fu:Sx-1%40h", "u=https%3A%2F%2F***%40h"),
    ("u=https%3A%2F%2Fu%3ASx-1@h%2Fv1", "u=https%3A%2F%2F***@h%2Fv1"),
    ("body=%7B%22password%22%3A%22Sx-1%22%7D", "body=%7B%22password%22%3A%22***%22%7D"),
]

SCHEME_LESS = [
    ("Error connecting to //user:Sx-1@cache.bank.test:6379/0.", "Error connecting to //***@cache.bank.test:6379/0."),
    ('{"url":"\\/\\/u:Sx-1@cache:6379"}', '{"url":"\\/\\/***@cache:6379"}'),
    ("redis=//u:Sx-1@cache:6379", "redis=//***@cache:6379"),
    ("at //u:pa/Sx-1@cache:6379 now", "at //*** now"),
]

KEY_VALUE = [
    ('{"password":"Sx-1","user":"bob"}', '{"password":"***","user":"bob"}'),
    ("{'api_token': 'Sx-1', 'db': 0}", "{'api_token': '***', 'db': 0}"),
    ("password=Sx-1", "password=***"),  # masked before too: kept
    ("token=Sx-1&x=1", "token=***&x=1"),  # masked before too: kept
    ("Authorization: Bearer abc.Sx-1", "Authorization: Bearer ***"),
    ('Authorization: Token token="Sx-1"', "Authorization: Token ***"),  # Pisano's own header
    ("{'Authorization': 'Basic dXNlcjpw-Sx-1=='}", "{'Authorization': 'Basic ***'}"),
    ("authorization=Basic dXNlcjpw-Sx-1==", "authorization=Basic ***"),
    ("X-Api-Key: Sx-1\nsasl.password: Sx-2", "X-Api-Key: ***\nsasl.password: ***"),
    ('{"accessToken": "Sx-1", "client_secret": "Sx-2", "PWD": "Sx-3"}',
     '{"accessToken": "***", "client_secret": "***", "PWD": "***"}'),
    ("pwd=Sx-1 and sasl.password = Sx-2", "pwd=*** and sasl.password = ***"),
    ('{"password": "pa\\"Sx-1"}', '{"password": "***"}'),  # an escaped quote does not end the value
    ('"body":"{\\"password\\":\\"Sx-1\\",\\"x\\":1}"', '"body":"{\\"password\\":\\"***\\",\\"x\\":1}"'),
    ('{"pwd": Sx-1, "x": 1}', '{"pwd": ***, "x": 1}'),
    ('{"password": "Sx-1', '{"password": "***'),  # cut short: the rest of the text may be the secret
    # A value ends at a blank; a name it swallowed whose value lies beyond is still seen.
    ('password=a/"pwd": Sx-1', "password=*** ***"),
    ("pwd=a;authorization=Basic Sx-1", "pwd=*** ***"),
    # Second review: a Ruby hash as Rails (Pisano's own stack) inspects it; `=>` was read as `=`
    # with the value `>`, which masked nothing and showed the password.
    ('{"user"=>{"password"=>"Sx-1", "name"=>"bob"}}', '{"user"=>{"password"=>"***", "name"=>"bob"}}'),
    (':password => "Sx-1"', ':password => "***"'),
    # Second review: a Python bytes value in a repr (`b'...'`): the `b` was taken for the value.
    ("{'password': b'Sx-1', 'db': 0}", "{'password': b'***', 'db': 0}"),
    ("{'Authorization': b'Bearer Sx-1'}", "{'Authorization': b'Bearer ***'}"),
]


@pytest.mark.parametrize(("text", "masked"), JSON_ESCAPED + PERCENT_ENCODED + SCHEME_LESS + KEY_VALUE)
def test_secrets_in_text_are_masked_however_it_is_escaped(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


# Third review (2026-12-04): credentials written as words, not as `name=value` or a URL with `//`.
FLAGS = [  # a long flag whose name is a secret key (as in `name: value`), its value after a blank
    ("kafka-console-consumer --password Sx-1 --topic sms", "kafka-console-consumer --password *** --topic sms"),
    ("run --sasl-password\tSx-1", "run --sasl-password\t***"),
    ("cli --api-key 'Sx-1 2' -v", "cli --api-key '***' -v"),
    ("Command '['tool', '--client-secret', 'Sx-1']' returned 1",
     "Command '['tool', '--client-secret', '***']' returned 1"),
    ("(--token Sx-1)", "(--token ***)"),
    ("--password=Sx-1", "--password=***"),  # masked before too, as `name=value`: kept
]

REDIS_AUTH = [  # the password of a Redis AUTH echoed by an error or a trace; the ACL user stays
    ("Command # 1 (AUTH default Sx-1) of pipeline caused error: WRONGPASS",
     "Command # 1 (AUTH default ***) of pipeline caused error: WRONGPASS"),
    ("AUTH Sx-1", "AUTH ***"),
    ("auth app Sx-1\r\nPING", "auth app ***\r\nPING"),
    ('1733312345.1 [0 10.0.0.7:51234] "AUTH" "default" "Sx-1"',
     '1733312345.1 [0 10.0.0.7:51234] "AUTH" "default" "***"'),
    ('"auth" "pa\\"Sx-1"', '"auth" "***"'),
    # More text follows: which word is the password cannot be told; a word of letters only is prose.
    ("sent AUTH Sx-1 to redis-master", "sent AUTH *** to redis-master"),
    ("AUTH default Sx-1 failed", "AUTH default *** failed"),
    # Found in review: two words then the end read as `AUTH user pw`, so a password followed by a
    # word of prose was taken for the user and shown; a user is letters (`default`), this was not.
    ("AUTH Sx-1 failed", "AUTH *** ***"),
    ('("AUTH \'Sx-1\' refused")', '("AUTH \'***\' ***")'),
    # Found in review: the command as a list's or tuple's repr (redis-py's args), as flags were.
    ("['AUTH', 'default', 'Sx-1']", "['AUTH', 'default', '***']"),
    ('("AUTH", "Sx-1")', '("AUTH", "***")'),
]

COOKIES = [  # every cookie's value; a Set-Cookie's attributes stay
    ("Cookie: lang=tr; session=Sx-1", "Cookie: lang=***; session=***"),
    ("Set-Cookie: sid=Sx-1; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly",
     "Set-Cookie: sid=***; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly"),
    ("{'Cookie': 'a=Sx-1; b=Sx-2', 'Accept': '*/*'}", "{'Cookie': 'a=***; b=***', 'Accept': '*/*'}"),
    ('{"set-cookie":"sid=Sx-1; path=/; secure"}', '{"set-cookie":"sid=***; path=/; secure"}'),
    ("set-cookie: a=Sx-1; Path=/, b=Sx-2; Max-Age=0", "set-cookie: a=***; Path=/, b=***; Max-Age=0"),  # folded
    ("HTTP/1.1 401\r\nSet-Cookie: sid=\"Sx-1\"\r\nContent-Type: text/plain",
     "HTTP/1.1 401\r\nSet-Cookie: sid=***\r\nContent-Type: text/plain"),
    # Found in review: the first cookie right after the colon (`curl -H 'Cookie:sid=...'`) was left.
    ("Cookie:sid=Sx-1;lang=tr", "Cookie:sid=***;lang=***"),
    ("cookie:SESSION=Sx-1", "cookie:SESSION=***"),
    # Found in review: headers as a list of pairs, as httpx's Headers repr writes them once a name
    # repeats (two Set-Cookie), and h11 or ASGI raw headers.
    ("Headers([('set-cookie', 'sid=Sx-1; Path=/'), ('set-cookie', 'lb=Sx-2')])",
     "Headers([('set-cookie', 'sid=***; Path=/'), ('set-cookie', 'lb=***')])"),
    ("[(b'cookie', b'sid=Sx-1')]", "[(b'cookie', b'sid=***')]"),
    ("{'Cookie': ' sid=Sx-1'}", "{'Cookie': ' sid=***'}"),
    # Found in review: a header's line ran on past an escaped line break (a JSON string's `\r\n`),
    # and every `name=value` in the headers after it was masked as a cookie.
    ('{"raw": "Set-Cookie: lb=Sx-1\\r\\nX-Trace: req=abc-1"}', '{"raw": "Set-Cookie: lb=***\\r\\nX-Trace: req=abc-1"}'),
    ("no cookie: retried with Cookie: sid=Sx-1", "no cookie: retried with Cookie: sid=***"),  # prose, then one
    ("Cookie: ; sid=Sx-1", "Cookie: ; sid=***"),  # a proxy took the first one out
    # Found in review: a value ended at a JSON-escaped slash (`\/`, as PHP's json_encode writes
    # base64's `/`), and its rest was shown.
    ('{"h":"Cookie: sid=Sx-1\\/Sx-2+x=="}', '{"h":"Cookie: sid=***"}'),
    ('{"h":"Cookie: a=Sx-1; b=Sx-2"}', '{"h":"Cookie: a=***; b=***"}'),  # the JSON's closing quote stays
]

BARE_SCHEMES = [  # `Bearer`, `Basic` and their credential without a header name before them
    ("sent Bearer abc.def.Sx-1 to gw", "sent Bearer *** to gw"),
    ("retrying with basic dXNlcjpTeC0x", "retrying with basic ***"),
    ("(Basic dXNlcjpwYXNz)", "(Basic ***)"),  # `user:pass`: letters only, but of both cases
    ("Authorization: Bearer Bearer Sx-1", "Authorization: Bearer Bearer ***"),  # a client's double prefix
    ("{'auth': 'Bearer Sx-1=='}", "{'auth': 'Bearer ***'}"),
    ('{"error":"sent Basic Sx-1\\/Sx-2+ab== to gw"}', '{"error":"sent Basic *** to gw"}'),  # JSON-escaped `/`
]

SIGNED_URLS = [  # a signed URL's query: `X-Amz-Credential`, `X-Amz-Security-Token`, `access_token` were masked before
    ("GET https://b.s3.test/o?X-Amz-Credential=Sx-1%2F2026&X-Amz-Signature=Sx-2&X-Amz-Security-Token=Sx-3&X-Amz-Expires=60",
     "GET https://b.s3.test/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Expires=60"),
    ("https://a.blob.test/c/b?sv=2024-05-04&se=2026&sig=Sx-1&sp=r", "https://a.blob.test/c/b?sv=2024-05-04&se=2026&sig=***&sp=r"),
    ("u?X-Goog-Signature=Sx-1&signature=Sx-2&Signature=Sx-3", "u?X-Goog-Signature=***&signature=***&Signature=***"),
]

USER_INFO_WITHOUT_SLASHES = [  # `user:password@host`, a Redis address as a client's error shows it
    ("Error connecting to default:Sx-1@redis-master:6379.", "Error connecting to default:***@redis-master:6379."),
    ('{"redis":"app:Sx-1@cache"}', '{"redis":"app:***@cache"}'),
    ("REDIS=u:p@Sx-1@cache:6379/0", "REDIS=u:***@cache:6379/0"),  # to the last @
    ("to :Sx-1@cache:6379", "to :***@cache:6379"),  # no user
    ("bob@bank.test:Sx-1@cache", "bob@bank.test:***@cache"),
]

ESCAPED_SLASHES = [  # a JSON encoder that writes `/` as `\u002F`, or a repr as `\x2f`
    ('{"detail":"https:\\u002F\\u002Fuser:Sx-1@gw.bank.test\\u002Fv1"}',
     '{"detail":"https:\\u002F\\u002F***@gw.bank.test\\u002Fv1"}'),
    ("https:\\u002f\\u002fu:Sx-1@h", "https:\\u002f\\u002f***@h"),
    ("'https:\\x2f\\x2fu:Sx-1@h'", "'https:\\x2f\\x2f***@h'"),
    ("https:\\u002F\\u002Fu:pa\\u002FSx-1@h\\u002Fv1", "https:\\u002F\\u002F***"),  # a raw `/` in the password
    ("at \\u002F\\u002Fu:Sx-1@cache:6379", "at \\u002F\\u002F***@cache:6379"),
]

# Fifth review (2026-12-05): an Authorization header's value whatever its scheme (a scheme of
# letters stays: a diagnostic); it runs to the end of the line, as in HTTP, but for the one-word
# credentials (`Bearer`, `Basic`, `Negotiate`, `NTLM`).
ANY_SCHEME = [
    ("Authorization: SharedKey acct:Sx-1", "Authorization: SharedKey ***"),
    ('Authorization: Hawk id="Sx-1", mac="Sx-2"', "Authorization: Hawk ***"),
    ("Proxy-Authorization: Foo Sx-1\r\nHost: gw", "Proxy-Authorization: Foo ***\r\nHost: gw"),
    ("authorization: Sx-1 Sx-2", "authorization: ***"),
    ('Authorization: Digest username="bob", response="Sx-1"', "Authorization: Digest ***"),
    ("Authorization: AWS4-HMAC-SHA256 Credential=Sx-1/2026, Signature=Sx-2", "Authorization: ***"),
    ("{'Proxy-Authorization': 'Hawk id=Sx-1'}", "{'Proxy-Authorization': 'Hawk ***'}"),
    ("authorization=SharedKey acct:Sx-1", "authorization=SharedKey ***"),
]

# Fifth review: the other schemes' credentials without a header name, as `Bearer`'s and `Basic`'s;
# a Digest credential (it holds `response=`, a challenge does not) to the end of the line.
MORE_BARE_SCHEMES = [
    ("sent Token abc-Sx-1 to gw", "sent Token *** to gw"),
    ("with NTLM TlRMTVNTUAABSx-1== now", "with NTLM *** now"),
    ("retry Negotiate YIIabcSx-1", "retry Negotiate ***"),
    ('sent Digest username="bob", realm="api", nonce="n1", uri="/v1", response="Sx-1"\nnext',
     "sent Digest ***\nnext"),
]

# Fifth review: redis-cli's password flags (`-a` only after a redis-cli: elsewhere it is `all`);
# argv and AUTH inside a JSON string (`\"`-quoted); AUTH as the RESP protocol writes it (a dump, a
# repr of the bytes); a status word alone after AUTH is no password.
REDIS_CLI = [
    ("redis-cli -h cache -a Sx-1 ping", "redis-cli -h cache -a *** ping"),
    ("redis-cli --pass Sx-1 -h x", "redis-cli --pass *** -h x"),
    ("redis-cli --pass=Sx-1", "redis-cli --pass=***"),
    ("['redis-cli', '-a', 'Sx-1']", "['redis-cli', '-a', '***']"),
    ("/usr/bin/valkey-cli --user app --pass 'Sx-1'", "/usr/bin/valkey-cli --user app --pass '***'"),
]

JSON_ESCAPED_COMMANDS = [
    ('"[\\"redis-cli\\", \\"-a\\", \\"Sx-1\\"]"', '"[\\"redis-cli\\", \\"-a\\", \\"***\\"]"'),
    ('"[\\"tool\\", \\"--password\\", \\"Sx-1\\"]"', '"[\\"tool\\", \\"--password\\", \\"***\\"]"'),
    ('{"cmd": "\\"AUTH default Sx-1\\""}', '{"cmd": "\\"AUTH default ***\\""}'),
    ('"[\\"AUTH\\", \\"default\\", \\"Sx-1\\"]"', '"[\\"AUTH\\", \\"default\\", \\"***\\"]"'),
    ('{"args": "[\\\\\\"AUTH\\\\\\", \\\\\\"Sx-1\\\\\\"]"}', '{"args": "[\\\\\\"AUTH\\\\\\", \\\\\\"***\\\\\\"]"}'),
]

RESP_AUTH = [
    ("*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$4\r\nSx-1\r\n", "*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$4\r\n***\r\n"),
    ("*3\\r\\n$4\\r\\nAUTH\\r\\n$7\\r\\ndefault\\r\\n$4\\r\\nSx-1\\r\\n",
     "*3\\r\\n$4\\r\\nAUTH\\r\\n$7\\r\\ndefault\\r\\n$4\\r\\n***\\r\\n"),
    ("b'*2\\r\\n$4\\r\\nauth\\r\\n$4\\r\\nSx-1\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n'",
     "b'*2\\r\\n$4\\r\\nauth\\r\\n$4\\r\\n***\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n'"),
    ("*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$4\r\nSx-1\r\n",
     "*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$4\r\n***\r\n"),
    ("*2\r\n$4\r\nAUTH\r\n$4\r\nSx-1", "*2\r\n$4\r\nAUTH\r\n$4\r\n***"),  # cut short
]

# Fifth review: a session id is a credential in a query or a cookie without its header too; a
# Set-Cookie's attributes stay after the value a secret name masked.
SESSIONS = [
    ("GET /a?session=Sx-1&x=1", "GET /a?session=***&x=1"),
    ("redirect to /app;jsessionid=Sx-1 now", "redirect to /app;jsessionid=*** now"),
    ("sid=Sx-1 expired", "sid=*** expired"),
    ("sessionid=Sx-1; lang=tr", "sessionid=***; lang=tr"),
    ("PHPSESSID=Sx-1&session_id=Sx-2", "PHPSESSID=***&session_id=***"),
    ("Set-Cookie: token=Sx-1; Path=/; HttpOnly", "Set-Cookie: token=***; Path=/; HttpOnly"),
    ("set-cookie: session=Sx-1;Path=/;Secure", "set-cookie: session=***;Path=/;Secure"),
    ("password=Sx-1;Sx-2 more", "password=*** more"),  # a `;` inside the value is the value's
]

# Fifth review: the `@` and `:` of a user info escaped as a JSON encoder or a repr may write them
# (`\u0040`, `\x3a`), a full-width at sign, and an IPv6 literal after the @.
ESCAPED_AT_AND_COLON = [
    ("redis://user\\u003ASx-1\\u0040cache:6379", "redis://***\\u0040cache:6379"),
    ("user\\u003ASx-1\\u0040cache", "user\\u003A***\\u0040cache"),
    ("to user:Sx-1\\x40cache:6379", "to user:***\\x40cache:6379"),
    ("user\\x3aSx-1@cache", "user\\x3a***@cache"),
    ("user:Sx-1\uff20cache", "user:***\uff20cache"),
    ('{"url":"redis://u:Sx-1\\u0040h"}', '{"url":"redis://***\\u0040h"}'),
    ('"{\\"url\\":\\"u:Sx-1\\\\u0040h\\"}"', '"{\\"url\\":\\"u:***\\\\u0040h\\"}"'),  # escaped twice
    ("default:Sx-1@[::1]:6379", "default:***@[::1]:6379"),
    ("Error connecting to app:Sx-1@[fd00::5]:6379.", "Error connecting to app:***@[fd00::5]:6379."),
]

# Review of the fifth (2026-12-05): redis-cli as Windows names it (`redis-cli.exe`, Memurai's and the
# ports') and in capitals, as a Windows path or a shell history may write it; its `-a` was shown.
REDIS_CLI_NAMES = [
    ("C:\\redis\\redis-cli.exe -a Sx-1 ping", "C:\\redis\\redis-cli.exe -a *** ping"),
    ('redis-cli.exe -h h -a "Sx 1"', 'redis-cli.exe -h h -a "***"'),
    ("REDIS-CLI -a Sx-1", "REDIS-CLI -a ***"),
    ("Valkey-Cli.EXE -a Sx-1", "Valkey-Cli.EXE -a ***"),
]

# Review of the fifth: a full-width colon (U+FF1A) in a user info, as the same input method that types
# a full-width at sign types it; `user\uff1apw\uff20host` was shown whole.
FULL_WIDTH_COLON = [
    ("user\uff1aSx-1\uff20cache", "user\uff1a***\uff20cache"),
    ("user\uff1aSx-1@cache:6379", "user:***@cache:6379"),  # a `:` written plain too: decoded
]

# Review of the fifth: a `;` in a value before a word that is a cookie attribute's name but not an
# attribute (no `=` after Path, Domain, Expires...; more than the word after Secure, HttpOnly) is the
# value's: the rest of the password after it was shown (`password=Sx;secure-part`).
SEMICOLON_IN_VALUE = [
    ("password=Sx-1;secure-part", "password=***"),
    ("token=Sx-1;Domain.2 next", "token=*** next"),
    ("redis://h/0?password=Sx-1;Path2&db=0", "redis://h/0?password=***&db=0"),
    ("pwd=Sx-1;expires-soon", "pwd=***"),
    ("token=Sx-1;Secure", "token=***;Secure"),  # a flag attribute, as Set-Cookie ends with it
    ("token=Sx-1;HttpOnly; x=1", "token=***;HttpOnly; x=1"),
    ("token=Sx-1;Max-Age=60", "token=***;Max-Age=60"),
]

# Review of the fifth: a password holding a backslash, which a repr of the bytes doubles (`Sx\\\\rest`):
# the escaped backslash then `r` or `n` was read as an escaped line break, and the rest was shown.
RESP_BACKSLASH = [
    ("b'*2\\r\\n$4\\r\\nAUTH\\r\\n$7\\r\\nSx\\\\rest\\r\\n'", "b'*2\\r\\n$4\\r\\nAUTH\\r\\n$7\\r\\n***\\r\\n'"),
    ("*3\\r\\n$4\\r\\nAUTH\\r\\n$3\\r\\napp\\r\\n$6\\r\\nS\\\\nx-1\\\\",
     "*3\\r\\n$4\\r\\nAUTH\\r\\n$3\\r\\napp\\r\\n$6\\r\\n***"),  # cut short after a backslash
]

WORDS = (FLAGS + REDIS_AUTH + COOKIES + BARE_SCHEMES + SIGNED_URLS + USER_INFO_WITHOUT_SLASHES + ESCAPED_SLASHES
         + ANY_SCHEME + MORE_BARE_SCHEMES + REDIS_CLI + JSON_ESCAPED_COMMANDS + RESP_AUTH
         + SESSIONS + ESCAPED_AT_AND_COLON + REDIS_CLI_NAMES + FULL_WIDTH_COLON
         + SEMICOLON_IN_VALUE + RESP_BACKSLASH)


@pytest.mark.parametrize(("text", "masked"), WORDS)
def test_credentials_written_as_words_flags_commands_cookies_are_masked(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.parametrize("text", [
    "Pisano answered 400 code 13028: Invalid parameters (campaign 5d1c9a7e), retry later",
    '{"token_type": "Bearer", "expires_in": 3600, "keyword": "x", "author": "bob", "route_key": "retail"}',
    '{"errors": {"password": ["is too short"]}, "message": "Invalid token"}',  # structure, not a value
    "Error: connection refused; monkey: see; password: ; see //docs/page and a//b@c and // note @ x",
    "50% done, 100%zz, a%2Fb%2Fc, https%3A%2F%2Fgw.bank.test%2Fv1%3Flang%3Dtr",
    "Authorization header missing; bearer token expired",
    "Invalid value for 'token': must be a string; {\"password\": null, \"pwd\": true}",
    # Prose after a secret name: a word of letters only (our own config errors read like this).
    "REPLAY_SIGNING_KEY: shorter than 16 characters; wrong token: the destination's circuit opens",
    # Third review: near misses of the new rules.
    "pass --password-file /run/secrets/kafka or --password <pw> --token; -p 6379 is the port, --monkey see",
    "ERR AUTH <password> called without any password configured for the default user",
    "NOAUTH Authentication required; basic auth is not enabled, auth failed for user bob",
    "auth error: token expired",  # a word and its colon: a label, prose
    "cookie: none set; the Cookie header is missing", "missing: ['cookie', 'token']",
    # Found in review: a value not starting with a cookie is prose; the codes after it were masked.
    "invalid cookie: rejected by gw, code=13028 status=503 topic=sms.events",
    'Bearer <admin token>; bearer token expired; {"token_type": "Bearer"}; JWT Bearer Token',
    'WWW-Authenticate: Bearer realm="pisano", error="invalid_token"; Basic realm=api',
    "code=13028&state=retry&design=x&signal=y",
    "mail bob@example.com at 12:30@home, redis-master:6379, node 10.0.0.5:30004@31004 master, mailto:bob@bank.test",
    "see https://gw.bank.test/v1 and \\u002F\\u002Fnote, a\\x2f\\x2fb@c",
    # Fifth review: near misses of the schemes added.
    "token expired; Token refresh failed for retail; NTLM authentication failed; Negotiate ok",
    "retried token 3 times; Token v2 format; NTLM v2 only; negotiate 1.1",  # too short for a credential
    'WWW-Authenticate: Digest realm="api", nonce="n1", qop="auth"; Authorization: Bearer',
    "ls -a /tmp; docker ps -a --format x; git commit -a -m fix; redis-cli -p 6379 --pass",
    # A status word alone after AUTH (at a line's or a clause's end) is no password.
    "AUTH OK", "AUTH failed", "redis: AUTH succeeded\nnext", "AUTH ERR", "AUTH error.", "AUTH required",
    "AUTH OK, connected", "(AUTH failed)",
    "session.timeout.ms=45000 side=buy sids=3 session_count=2",
    "mail bob\\u0040bank.test at 12\\u003A30, bob\uff20bank.test, [::1]:6379, \\x40home, 12\uff1a30",
])
def test_what_is_not_a_secret_stays_as_it_was(text: str) -> None:
    assert mask_urls_in_text(text) == text


ALL_CASES = JSON_ESCAPED + PERCENT_ENCODED + SCHEME_LESS + KEY_VALUE + WORDS


def test_log_lines_and_dead_letter_headers_go_through_the_same_masking() -> None:
    """Both outputs of a text from elsewhere: the formatters (message and traceback) and the
    `dlq.error.message` / `pisano.error.message` header text."""
    for text, _ in ALL_CASES:
        try:
            raise RuntimeError(text)
        except RuntimeError:
            record = logging.LogRecord("t", logging.ERROR, "", 0, "failed: %s", (text,), sys.exc_info())
        shown = [JsonFormatter().format(record), TextFormatter().format(record), error_text(text)]
        for output in shown:
            assert "Sx-" not in output, output


# Review of the fifth: an Authorization header quoted inside a JSON or dict string (a gateway's error
# body, a repr of headers) ran to the end of the line, so the fields after the string and our own
# text after the body (`; dead-lettering 40 events`) were masked with it. It ends with that string;
# a quote inside that is not followed by the end of a value (a JSON writer that did not escape the
# header's own quotes) does not end it.
@pytest.mark.parametrize(("text", "masked"), [
    ('request failed: HTTP 401: {"detail":"Authorization: invalid Sx-1","code":13028}; dead-lettering 40 events',
     'request failed: HTTP 401: {"detail":"Authorization: invalid ***","code":13028}; dead-lettering 40 events'),
    # (Prose, since the sixth review: `Authorization: invalid token` reads as it was written.)
    ('HTTP 401: {"detail":"Authorization: invalid token","code":13028}; dead-lettering 40 events', None),
    ('{"h": "Authorization: Hawk id=\\"Sx-1\\", mac=\\"Sx-2\\"", "code": 1}',
     '{"h": "Authorization: Hawk ***", "code": 1}'),
    ("{'headers': 'Authorization: SharedKey acct:Sx-1', 'status': 401}",
     "{'headers': 'Authorization: SharedKey ***', 'status': 401}"),
    ('{"h":"Authorization: Bearer Sx-1","code":1}', '{"h":"Authorization: Bearer ***","code":1}'),
    ('"h": "Authorization: Hawk id="Sx-1", mac="Sx-2"" then', '"h": "Authorization: Hawk ***'),  # not escaped
    ('"h": "x" Authorization: Hawk id="Sx-1", mac="Sx-2"', '"h": "x" Authorization: Hawk ***'),  # not inside
])
def test_an_authorization_header_inside_a_quoted_value_ends_with_it(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


# Review of the fifth, closed in the sixth: RESP with its line breaks escaped twice (a repr of the
# bytes inside a JSON string: `\\\\r\\\\n`), each bulk string read at that level.
@pytest.mark.parametrize("text", ['{"msg": "b\'*2\\\\r\\\\n$4\\\\r\\\\nAUTH\\\\r\\\\n$4\\\\r\\\\nSx-1\\\\r\\\\n\'"}',
                                  '"*3\\\\r\\\\n$4\\\\r\\\\nauth\\\\r\\\\n$7\\\\r\\\\ndefault\\\\r\\\\n$4\\\\r\\\\nSx-1"'])
def test_resp_auth_inside_a_json_string_is_masked(text: str) -> None:
    assert mask_urls_in_text(text) == text.replace("Sx-1", "***")  # the user and the lengths stay


# ...and an Authorization value in a list (Go's http.Header as JSON) or a pair list (werkzeug's Headers,
# ASGI's raw headers) with no Bearer/Basic word before it; an error list or a list of names stays.
@pytest.mark.parametrize(("text", "masked"), [
    ('{"Authorization": ["SharedKey acct:Sx-1"]}', '{"Authorization": ["SharedKey ***"]}'),
    ("[('authorization', 'Sx-1abcdef')]", "[('authorization', '***')]"),
    ("[(b'authorization', b'SharedKey Sx-1')]", "[(b'authorization', b'SharedKey ***')]"),
    ("Headers([('Authorization', 'Hawk id=Sx-1, mac=Sx-2')])", "Headers([('Authorization', 'Hawk ***')])"),
    ('[["Proxy-Authorization", "Sx-1"], ["Host", "gw"]]', '[["Proxy-Authorization", "***"], ["Host", "gw"]]'),
    ('{"Authorization": ["Sx-1", "Sx-2"]}', '{"Authorization": ["***"]}'),
])
def test_an_authorization_value_in_a_list_is_masked(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.parametrize("text", ['{"Authorization": ["This field is required."]}', "{'authorization': []}",
                                  "missing headers: ['authorization', 'x-api-key']",
                                  "('authorization', 'content-type')", "['authorization', 'content-type']"])
def test_an_error_list_or_a_list_of_names_under_authorization_stays(text: str) -> None:
    assert mask_urls_in_text(text) == text
