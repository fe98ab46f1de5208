// Checks that clickhouse-go v2 over HTTP, configured as Grafana's ClickHouse data source
// configures it (database/sql through OpenDB, HTTP protocol, gzip), works against an
// endpoint. Reads COMPAT_URL, COMPAT_USER, COMPAT_KEY, COMPAT_CASES, COMPAT_TABLE and
// COMPAT_ROWS; prints one JSON line; exits 1 when any check fails.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"
)

type valueCase struct {
	Name   string `json:"name"`
	SQL    string `json:"sql"`
	Kind   string `json:"kind"`
	Expect any    `json:"expect"`
	Zone   string `json:"zone"`
}

type refusedCase struct {
	Name  string  `json:"name"`
	SQL   string  `json:"sql"`
	Codes []int32 `json:"codes"`
}

type check struct {
	OK       bool             `json:"ok"`
	Detail   map[string]any   `json:"detail,omitempty"`
	Failures []map[string]any `json:"failures,omitempty"`
}

func (c *check) fail(f map[string]any) { c.OK = false; c.Failures = append(c.Failures, f) }

func main() {
	var cases struct {
		Values  []valueCase   `json:"values"`
		Refused []refusedCase `json:"refused"`
	}
	raw, err := os.ReadFile(env("COMPAT_CASES"))
	must(err)
	must(json.Unmarshal(raw, &cases))
	endpoint, err := url.Parse(env("COMPAT_URL"))
	must(err)
	table := env("COMPAT_TABLE")
	rows, err := strconv.ParseUint(env("COMPAT_ROWS"), 10, 64)
	must(err)

	db := clickhouse.OpenDB(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{endpoint.Host},
		Auth:        clickhouse.Auth{Username: env("COMPAT_USER"), Password: os.Getenv("COMPAT_KEY")},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionGZIP},
		ClientInfo:  clickhouse.ClientInfo{Products: []struct{ Name, Version string }{{Name: "grafana", Version: "compat"}}},
		DialTimeout: 10 * time.Second,
		ReadTimeout: 300 * time.Second,
	})
	defer db.Close()
	ctx := context.Background()
	checks := map[string]*check{}

	connect := &check{OK: true}
	checks["connect"] = connect
	if err := db.PingContext(ctx); err != nil {
		connect.fail(failure("ping", err))
	} else {
		var version string
		if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&version); err != nil {
			connect.fail(failure("SELECT version()", err))
		} else {
			connect.Detail = map[string]any{"version": version}
		}
	}
	if !connect.OK {
		report(checks)
	}

	types := &check{OK: true}
	checks["types"] = types
	for _, c := range cases.Values {
		var v any
		if err := db.QueryRowContext(ctx, c.SQL).Scan(&v); err != nil {
			types.fail(failure(c.Name, err))
			continue
		}
		got, zone := canonical(v, c.Kind)
		if !sameJSON(got, c.Expect) || (c.Zone != "" && zone != c.Zone) {
			types.fail(map[string]any{"name": c.Name, "got": got, "zone": zone, "expect": c.Expect, "expectZone": c.Zone, "goType": fmt.Sprintf("%T", v)})
		}
	}

	// Rows are counted and summed as they arrive: none are kept.
	stream := &check{OK: true}
	checks["stream"] = stream
	started := time.Now()
	result, err := db.QueryContext(ctx, "SELECT n FROM "+table)
	if err != nil {
		stream.fail(failure("query", err))
	} else {
		var count, sum, n uint64
		for result.Next() {
			if err := result.Scan(&n); err != nil {
				stream.fail(failure("scan", err))
				break
			}
			count++
			sum += n
		}
		if err := result.Err(); err != nil {
			stream.fail(failure("read", err))
		}
		result.Close()
		stream.Detail = map[string]any{"rows": count, "sum": strconv.FormatUint(sum, 10), "seconds": time.Since(started).Seconds()}
		if want := rows * (rows - 1) / 2; count != rows || sum != want {
			stream.fail(map[string]any{"name": "count and sum", "got": []uint64{count, sum}, "expect": []uint64{rows, want}})
		}
	}

	// {name:Type} placeholders with Named arguments go to the server as param_<name>.
	parameters := &check{OK: true}
	checks["parameters"] = parameters
	text := "O'Brien \\ \"q\"\t✓\nend"
	var plusOne int64
	var echoed string
	if err := db.QueryRowContext(ctx, "SELECT {a:Int64} + 1, {s:String}", clickhouse.Named("a", 41), clickhouse.Named("s", text)).Scan(&plusOne, &echoed); err != nil {
		parameters.fail(failure("scalar parameters", err))
	} else if plusOne != 42 || echoed != text {
		parameters.fail(map[string]any{"name": "scalar parameters", "got": []any{plusOne, echoed}, "expect": []any{42, text}})
	}
	var below uint64
	if err := db.QueryRowContext(ctx, "SELECT count() FROM "+table+" WHERE n < {limit:UInt64}", clickhouse.Named("limit", uint64(1000))).Scan(&below); err != nil {
		parameters.fail(failure("parameter in WHERE", err))
	} else if below != 1000 {
		parameters.fail(map[string]any{"name": "parameter in WHERE", "got": below, "expect": 1000})
	}

	refused := &check{OK: true, Detail: map[string]any{}}
	checks["refused"] = refused
	for _, c := range cases.Refused {
		_, err := db.ExecContext(ctx, strings.ReplaceAll(c.SQL, "{table}", table))
		var exception *clickhouse.Exception
		var httpError *clickhouse.HTTPError
		switch {
		case err == nil:
			refused.fail(map[string]any{"name": c.Name, "error": "no error"})
		case !errors.As(err, &exception):
			refused.fail(map[string]any{"name": c.Name, "error": err.Error(), "errorType": fmt.Sprintf("%T", err), "expect": "*clickhouse.Exception"})
		case !contains(c.Codes, exception.Code):
			refused.fail(map[string]any{"name": c.Name, "code": exception.Code, "expect": c.Codes, "error": err.Error()})
		default:
			status := 0
			if errors.As(err, &httpError) {
				status = httpError.StatusCode
			}
			refused.Detail[c.Name] = map[string]any{"code": exception.Code, "status": status}
		}
	}

	report(checks)
}

// report prints the one JSON line and exits: 0 when every check passed, else 1.
func report(checks map[string]*check) {
	ok := true
	for _, c := range checks {
		ok = ok && c.OK
	}
	out, _ := json.Marshal(map[string]any{"driver": "clickhouse-go", "version": moduleVersion(), "ok": ok, "checks": checks})
	fmt.Println(string(out))
	if !ok {
		os.Exit(1)
	}
	os.Exit(0)
}

// canonical turns a scanned value into the form cases.json states: integers and
// decimals as decimal text, instants as UTC text with microseconds (and the zone
// apart), bytes as hex, arrays as lists, NULL as nil.
func canonical(v any, kind string) (any, string) {
	switch t := v.(type) {
	case nil:
		return nil, ""
	case time.Time:
		return t.UTC().Format("2006-01-02T15:04:05.000000Z"), t.Location().String()
	case string:
		if kind == "bytes" {
			return hex.EncodeToString([]byte(t)), ""
		}
		return t, ""
	case []byte:
		return hex.EncodeToString(t), ""
	case decimal.Decimal:
		return t.String(), ""
	case big.Int:
		return t.String(), ""
	case *big.Int:
		if t == nil {
			return nil, ""
		}
		return t.String(), ""
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Pointer:
		if r.IsNil() {
			return nil, ""
		}
		return canonical(r.Elem().Interface(), kind)
	case reflect.Slice, reflect.Array:
		items := make([]any, r.Len())
		for i := range items {
			items[i], _ = canonical(r.Index(i).Interface(), kind)
		}
		return items, ""
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(r.Int(), 10), ""
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(r.Uint(), 10), ""
	}
	return fmt.Sprintf("unexpected %T: %v", v, v), ""
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func failure(name string, err error) map[string]any {
	return map[string]any{"name": name, "error": err.Error(), "errorType": fmt.Sprintf("%T", err)}
}

func contains(codes []int32, code int32) bool {
	for _, c := range codes {
		if c == code {
			return true
		}
	}
	return false
}

func moduleVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/ClickHouse/clickhouse-go/v2" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func env(name string) string {
	value := os.Getenv(name)
	if value == "" {
		fmt.Fprintf(os.Stderr, "%s is not set\n", name)
		os.Exit(2)
	}
	return value
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
