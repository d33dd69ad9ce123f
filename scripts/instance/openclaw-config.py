# spotpool: merge spotpool's settings into an OpenClaw gateway's configuration.
# start-container.sh runs it (inlined, python3 -I) as the container's uid, before
# the container starts; scripts/openclaw-check.sh runs the same text from the
# generated command.
#
# Arguments: DATA_FD STATE ORIGIN BASE_PATH
#   DATA_FD    an open file descriptor of the user's /data directory
#   STATE      the state directory under it (one name, e.g. .openclaw; empty
#              for /data itself): created 0700 when missing
#   ORIGIN     the user's browser origin, added to allowedOrigins
#   BASE_PATH  the path the load balancer routes to the user (empty: none)
#
# In STATE/openclaw.json (JSON5, as OpenClaw reads it) it sets gateway.mode to
# local when unset, adds ORIGIN to gateway.controlUi.allowedOrigins, sets
# gateway.controlUi.basePath, and removes gateway.auth.token (it would beat the
# user's secret OPENCLAW_GATEWAY_TOKEN). Everything else is the user's and is
# kept. A file it cannot read as JSON5 is renamed aside, never deleted. The file
# is rewritten (atomically) only when something changed: the gateway watches it.
# Nothing it prints carries a value of the configuration.
import json
import os
import re
import sys
import time

NAME = "openclaw.json"
LIMIT = 4 << 20
WORD = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
KEY_END = re.compile(r"\s*:")
# Written as escapes: the program travels inside a single-quoted shell word.
SINGLE, DOUBLE, BACKSLASH = "\x27", "\x22", "\x5c"
CLOSES = re.compile(r"(?:\s|//[^\n]*|/\*.*?\*/)*[}\]]", re.S)


def note(text):
    print("gateway config: " + text)


def json5_to_json(text):
    # The JSON5 people write by hand (comments, trailing commas, unquoted keys,
    # single-quoted strings) as JSON; json.loads judges the rest.
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in (DOUBLE, SINGLE):
            j, body = i + 1, []
            while j < n and text[j] != c:
                pair = text[j : j + 2]
                if pair == BACKSLASH + SINGLE:
                    body.append(SINGLE)
                    j += 2
                elif text[j] == BACKSLASH:
                    body.append(pair)
                    j += 2
                elif text[j] == DOUBLE:
                    body.append(BACKSLASH + DOUBLE)
                    j += 1
                else:
                    body.append(text[j])
                    j += 1
            if j >= n:
                raise ValueError("unterminated string")
            out.append(DOUBLE + "".join(body) + DOUBLE)
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated comment")
            i = j + 2
        elif c == ",":
            if not CLOSES.match(text, i + 1):
                out.append(c)
            i += 1
        elif c.isascii() and (c.isalpha() or c in "_$"):
            word = WORD.match(text, i).group(0)
            i += len(word)
            quoted = KEY_END.match(text, i) and word not in ("true", "false", "null")
            out.append(DOUBLE + word + DOUBLE if quoted else word)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse(raw):
    # The configuration as a dict, or None when it is not one OpenClaw could read.
    try:
        text = raw.decode("utf-8")
        try:
            config = json.loads(text)
        except ValueError:
            config = json.loads(json5_to_json(text))
    except (ValueError, UnicodeError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None
    gateway = config.get("gateway", {})
    if not isinstance(gateway, dict):
        return None
    for key in ("controlUi", "auth"):
        if not isinstance(gateway.get(key, {}), dict):
            return None
    return config


def read(state):
    try:
        fd = os.open(NAME, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=state)
    except FileNotFoundError:
        return None
    except OSError:
        return b"\0"
    with os.fdopen(fd, "rb") as f:
        return f.read(LIMIT + 1)


def merge(config, origin, base_path):
    gateway = config.setdefault("gateway", {})
    gateway.setdefault("mode", "local")
    ui = gateway.setdefault("controlUi", {})
    origins = ui.get("allowedOrigins")
    if not isinstance(origins, list):
        origins = []
    if origin not in origins:
        origins.append(origin)
    ui["allowedOrigins"] = origins
    if base_path:
        if ui.get("basePath") not in (None, base_path):
            note("gateway.controlUi.basePath set to the route, " + base_path)
        ui["basePath"] = base_path
    auth = gateway.get("auth", {})
    if "token" in auth:
        del auth["token"]
        note("gateway.auth.token removed: the token is the secret OPENCLAW_GATEWAY_TOKEN")


def write(state, config):
    temporary = NAME + ".spotpool-tmp"
    try:
        os.unlink(temporary, dir_fd=state)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600, dir_fd=state)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, NAME, src_dir_fd=state, dst_dir_fd=state)
    os.fsync(state)


def main():
    data_fd, state_name, origin, base_path = sys.argv[1:5]
    data = int(data_fd)
    if state_name:
        try:
            os.mkdir(state_name, 0o700, dir_fd=data)
        except FileExistsError:
            pass
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        state = os.open(state_name, flags, dir_fd=data)
    else:
        state = data
    raw = read(state)
    config = {} if raw is None or not raw.strip() else parse(raw)
    if config is None or (raw is not None and len(raw) > LIMIT):
        aside = "%s.invalid-%d" % (NAME, time.time())
        os.rename(NAME, aside, src_dir_fd=state, dst_dir_fd=state)
        note("%s is not JSON5 OpenClaw can read: kept as %s, starting anew" % (NAME, aside))
        config, raw = {}, None
    before = json.dumps(config, sort_keys=True)
    merge(config, origin, base_path)
    if raw is not None and json.dumps(config, sort_keys=True) == before:
        note("unchanged")
        return
    write(state, config)
    note("written")


try:
    main()
except Exception as error:
    # The kind of failure only: an OSError's text names a path, never a value.
    reason = error.strerror if isinstance(error, OSError) else type(error).__name__
    print("could not be merged: %s" % reason)
    sys.exit(2)
