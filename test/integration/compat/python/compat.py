"""Checks that clickhouse-connect works against an endpoint.

Reads COMPAT_URL, COMPAT_USER, COMPAT_KEY, COMPAT_CASES, COMPAT_TABLE and COMPAT_ROWS;
prints one JSON line; exits 1 when any check fails.
"""
import datetime
import decimal
import json
import os
import sys
import time
from importlib.metadata import version

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError


def canonical(value, kind):
    """The form cases.json states: integers and decimals as text, instants as UTC text
    with microseconds (and the zone apart), bytes as hex, lists, NULL as None."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return str(value).lower(), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, decimal.Decimal):
        return format(value, 'f'), None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return 'naive ' + value.isoformat(), None
        utc = value.astimezone(datetime.timezone.utc)
        return utc.strftime('%Y-%m-%dT%H:%M:%S.%fZ'), str(value.tzinfo)
    if isinstance(value, (bytes, bytearray)):
        return value.hex(), None
    if isinstance(value, (list, tuple)):
        return [canonical(item, kind)[0] for item in value], None
    return value, None


def failure(name, error):
    return {'name': name, 'error': str(error), 'errorType': type(error).__name__}


def main():
    with open(os.environ['COMPAT_CASES'], encoding='utf-8') as file:
        cases = json.load(file)
    table = os.environ['COMPAT_TABLE']
    rows = int(os.environ['COMPAT_ROWS'])
    checks = {}

    def check(name):
        checks[name] = {'ok': True}
        return checks[name]

    def fail(c, entry):
        c['ok'] = False
        c.setdefault('failures', []).append(entry)

    connect = check('connect')
    try:
        client = clickhouse_connect.get_client(
            dsn=os.environ['COMPAT_URL'],
            username=os.environ['COMPAT_USER'],
            password=os.environ.get('COMPAT_KEY', ''),
            connect_timeout=10,
            send_receive_timeout=300,
        )
        connect['detail'] = {'version': client.server_version}
    except Exception as error:  # noqa: BLE001 - the report names the type
        fail(connect, failure('get_client', error))
        report(checks)

    types = check('types')
    for case in cases['values']:
        try:
            # Strings as bytes: a String column may hold any bytes, not only UTF-8.
            formats = {'String': 'bytes'} if case.get('kind') == 'bytes' else None
            value = client.query(case['sql'], query_formats=formats).result_rows[0][0]
        except Exception as error:  # noqa: BLE001
            fail(types, failure(case['name'], error))
            continue
        got, zone = canonical(value, case.get('kind'))
        if got != case['expect'] or (case.get('zone') and zone != case['zone']):
            fail(types, {'name': case['name'], 'got': got, 'zone': zone, 'expect': case['expect'],
                         'expectZone': case.get('zone'), 'pythonType': type(value).__name__})

    # Blocks are counted and summed as they arrive: none are kept.
    stream = check('stream')
    started = time.monotonic()
    count = total = 0
    try:
        with client.query_column_block_stream(f'SELECT n FROM {table}') as blocks:
            for block in blocks:
                count += len(block[0])
                total += sum(block[0])
        stream['detail'] = {'rows': count, 'sum': str(total), 'seconds': time.monotonic() - started}
        if count != rows or total != rows * (rows - 1) // 2:
            fail(stream, {'name': 'count and sum', 'got': [count, total], 'expect': [rows, rows * (rows - 1) // 2]})
    except Exception as error:  # noqa: BLE001
        fail(stream, failure('stream', error))

    # {name:Type} placeholders go to the server as param_<name>.
    parameters = check('parameters')
    text = 'O\'Brien \\ "q"\t✓\nend'
    try:
        got = list(client.query('SELECT {a:Int64} + 1, {s:String}', parameters={'a': 41, 's': text}).result_rows[0])
        if got != [42, text]:
            fail(parameters, {'name': 'scalar parameters', 'got': got, 'expect': [42, text]})
    except Exception as error:  # noqa: BLE001
        fail(parameters, failure('scalar parameters', error))
    try:
        below = client.query(f'SELECT count() FROM {table} WHERE n < {{limit:UInt64}}', parameters={'limit': 1000}).result_rows[0][0]
        if below != 1000:
            fail(parameters, {'name': 'parameter in WHERE', 'got': below, 'expect': 1000})
    except Exception as error:  # noqa: BLE001
        fail(parameters, failure('parameter in WHERE', error))

    refused = check('refused')
    refused['detail'] = {}
    for case in cases['refused']:
        sql = case['sql'].replace('{table}', table)
        try:
            client.command(sql)
            fail(refused, {'name': case['name'], 'error': 'no error'})
        except DatabaseError as error:
            code = getattr(error, 'code', None)
            if code is None:
                code = server_code(str(error))
            if code not in case['codes']:
                fail(refused, {'name': case['name'], 'code': code, 'expect': case['codes'], 'error': str(error)[:500]})
            else:
                refused['detail'][case['name']] = {'code': code, 'errorType': type(error).__name__}
        except Exception as error:  # noqa: BLE001
            fail(refused, {**failure(case['name'], error), 'expect': 'DatabaseError'})

    report(checks)


def server_code(message):
    """The server's code out of the text clickhouse-connect puts in its exception."""
    marker = 'Code: '
    at = message.find(marker)
    if at < 0:
        return None
    digits = ''
    for char in message[at + len(marker):]:
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def report(checks):
    ok = all(c['ok'] for c in checks.values())
    print(json.dumps({'driver': 'clickhouse-connect', 'version': version('clickhouse-connect'), 'ok': ok, 'checks': checks},
                     ensure_ascii=False, default=str))
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
