import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;

/**
 * Checks that clickhouse-jdbc (the driver DBeaver uses) works against an endpoint. Reads
 * COMPAT_URL, COMPAT_USER, COMPAT_KEY, COMPAT_CASES, COMPAT_TABLE and COMPAT_ROWS; prints
 * one JSON line; exits 1 when any check fails. No JSON library: cases.json is read with a
 * small parser below, so the program needs only the driver's jars.
 */
public final class Compat {
  private static final DateTimeFormatter UTC_MICROS = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'");
  private final Map<String, Map<String, Object>> checks = new LinkedHashMap<>();

  public static void main(String[] args) throws Exception {
    new Compat().run();
  }

  private Map<String, Object> check(String name) {
    Map<String, Object> c = new LinkedHashMap<>();
    c.put("ok", true);
    checks.put(name, c);
    return c;
  }

  @SuppressWarnings("unchecked")
  private static void fail(Map<String, Object> check, Map<String, Object> failure) {
    check.put("ok", false);
    ((List<Object>) check.computeIfAbsent("failures", k -> new ArrayList<>())).add(failure);
  }

  private static Map<String, Object> failure(String name, Throwable error) {
    Map<String, Object> f = new LinkedHashMap<>();
    f.put("name", name);
    StringBuilder message = new StringBuilder(String.valueOf(error.getMessage()));
    for (Throwable cause = error.getCause(); cause != null; cause = cause.getCause()) message.append(" <- ").append(cause.getClass().getSimpleName()).append(": ").append(cause.getMessage());
    f.put("error", message.toString());
    f.put("errorType", error.getClass().getName());
    if (error instanceof SQLException sql) f.put("errorCode", sql.getErrorCode());
    return f;
  }

  private static Map<String, Object> map(Object... pairs) {
    Map<String, Object> m = new LinkedHashMap<>();
    for (int i = 0; i < pairs.length; i += 2) m.put((String) pairs[i], pairs[i + 1]);
    return m;
  }

  @SuppressWarnings("unchecked")
  private void run() throws Exception {
    Map<String, Object> cases = (Map<String, Object>) new Json(Files.readString(Path.of(env("COMPAT_CASES")), StandardCharsets.UTF_8)).value();
    String table = env("COMPAT_TABLE");
    long rows = Long.parseLong(env("COMPAT_ROWS"));
    // jdbc:clickhouse:http://host:port — the same URL DBeaver's ClickHouse driver takes.
    // COMPAT_JDBC_OPTIONS (optional, e.g. "compress=false") tries driver settings without a rebuild.
    String options = Objects.requireNonNullElse(System.getenv("COMPAT_JDBC_OPTIONS"), "");
    String url = "jdbc:clickhouse:" + env("COMPAT_URL") + (options.isEmpty() ? "" : "?" + options);
    Properties properties = new Properties();
    properties.setProperty("user", env("COMPAT_USER"));
    properties.setProperty("password", Objects.requireNonNullElse(System.getenv("COMPAT_KEY"), ""));

    Map<String, Object> connect = check("connect");
    Connection connection;
    try {
      connection = DriverManager.getConnection(url, properties);
      DatabaseMetaData meta = connection.getMetaData();
      connect.put("detail", map("version", meta.getDatabaseProductVersion(), "url", url));
      if (!connection.isValid(10)) fail(connect, map("name", "isValid", "error", "false"));
    } catch (SQLException error) {
      fail(connect, failure("getConnection", error));
      report();
      return;
    }

    Map<String, Object> types = check("types");
    for (Object item : (List<Object>) cases.get("values")) {
      Map<String, Object> c = (Map<String, Object>) item;
      String name = (String) c.get("name");
      String kind = (String) c.get("kind");
      // A String column may hold any bytes; the driver hands them over untouched only with binary_string_support.
      Connection reader = "bytes".equals(kind) ? DriverManager.getConnection(url, withBinaryStrings(properties)) : connection;
      try (Statement statement = reader.createStatement(); ResultSet result = statement.executeQuery((String) c.get("sql"))) {
        result.next();
        Object got;
        String zone = null;
        if ("bytes".equals(kind)) {
          got = HexFormat.of().formatHex(result.getBytes(1));
        } else if ("datetime".equals(kind)) {
          ZonedDateTime time = result.getObject(1, ZonedDateTime.class);
          got = time.withZoneSameInstant(ZoneOffset.UTC).format(UTC_MICROS);
          zone = time.getZone().getId();
        } else {
          got = canonical(result.getObject(1));
        }
        if (!Objects.equals(got, c.get("expect")) || (c.get("zone") != null && !c.get("zone").equals(zone))) {
          Object raw = result.getObject(1);
          fail(types, map("name", name, "got", got, "zone", zone, "expect", c.get("expect"), "expectZone", c.get("zone"),
              "javaType", raw == null ? null : raw.getClass().getName()));
        }
      } catch (Exception error) {
        fail(types, failure(name, error));
      } finally {
        if (reader != connection) reader.close();
      }
    }

    // Rows are counted and summed as they arrive: none are kept.
    Map<String, Object> stream = check("stream");
    long started = System.nanoTime();
    try (Statement statement = connection.createStatement(); ResultSet result = statement.executeQuery("SELECT n FROM " + table)) {
      long count = 0;
      BigInteger sum = BigInteger.ZERO;
      long partial = 0;
      while (result.next()) {
        count++;
        partial += result.getLong(1);
        if ((count & 0xFFFF) == 0) {
          sum = sum.add(BigInteger.valueOf(partial));
          partial = 0;
        }
      }
      sum = sum.add(BigInteger.valueOf(partial));
      BigInteger want = BigInteger.valueOf(rows).multiply(BigInteger.valueOf(rows - 1)).shiftRight(1);
      stream.put("detail", map("rows", count, "sum", sum.toString(), "seconds", (System.nanoTime() - started) / 1e9));
      if (count != rows || !sum.equals(want)) fail(stream, map("name", "count and sum", "got", List.of(count, sum.toString()), "expect", List.of(rows, want.toString())));
    } catch (Exception error) {
      fail(stream, failure("stream", error));
    }

    // PreparedStatement placeholders: the driver's own binding.
    Map<String, Object> parameters = check("parameters");
    String text = "O'Brien \\ \"q\"\t✓\nend";
    try (PreparedStatement statement = connection.prepareStatement("SELECT ? + 1, ?")) {
      statement.setLong(1, 41);
      statement.setString(2, text);
      try (ResultSet result = statement.executeQuery()) {
        result.next();
        List<Object> got = List.of(result.getLong(1), result.getString(2));
        if (!got.equals(List.of(42L, text))) fail(parameters, map("name", "scalar parameters", "got", got, "expect", List.of(42, text)));
      }
    } catch (Exception error) {
      fail(parameters, failure("scalar parameters", error));
    }
    try (PreparedStatement statement = connection.prepareStatement("SELECT count() FROM " + table + " WHERE n < ?")) {
      statement.setLong(1, 1000);
      try (ResultSet result = statement.executeQuery()) {
        result.next();
        long below = result.getLong(1);
        if (below != 1000) fail(parameters, map("name", "parameter in WHERE", "got", below, "expect", 1000));
      }
    } catch (Exception error) {
      fail(parameters, failure("parameter in WHERE", error));
    }

    // What DBeaver's navigator asks first: the tables of the current database.
    Map<String, Object> metadata = check("metadata");
    try (ResultSet tables = connection.getMetaData().getTables(null, null, table, null)) {
      if (!tables.next()) fail(metadata, map("name", "getTables", "error", "table " + table + " not listed"));
    } catch (Exception error) {
      fail(metadata, failure("getTables", error));
    }

    Map<String, Object> refused = check("refused");
    Map<String, Object> seen = new LinkedHashMap<>();
    refused.put("detail", seen);
    for (Object item : (List<Object>) cases.get("refused")) {
      Map<String, Object> c = (Map<String, Object>) item;
      String name = (String) c.get("name");
      List<Object> codes = (List<Object>) c.get("codes");
      try (Statement statement = connection.createStatement()) {
        statement.execute(((String) c.get("sql")).replace("{table}", table));
        fail(refused, map("name", name, "error", "no error"));
      } catch (SQLException error) {
        if (!codes.contains(String.valueOf(error.getErrorCode()))) {
          Map<String, Object> f = failure(name, error);
          f.put("expect", codes);
          fail(refused, f);
        } else {
          seen.put(name, map("code", error.getErrorCode(), "errorType", error.getClass().getName(), "sqlState", error.getSQLState()));
        }
      } catch (Exception error) {
        Map<String, Object> f = failure(name, error);
        f.put("expect", "java.sql.SQLException");
        fail(refused, f);
      }
    }
    connection.close();
    report();
  }

  private static Properties withBinaryStrings(Properties properties) {
    Properties copy = new Properties();
    copy.putAll(properties);
    copy.setProperty("binary_string_support", "true");
    return copy;
  }

  /** The form cases.json states: numbers as decimal text, arrays as lists, NULL as null. */
  private static Object canonical(Object value) throws SQLException {
    if (value == null) return null;
    if (value instanceof BigDecimal decimal) return decimal.toPlainString();
    if (value instanceof Number || value instanceof BigInteger) return value.toString();
    if (value instanceof Array array) return canonical(array.getArray());
    if (value instanceof List<?> list) {
      List<Object> items = new ArrayList<>();
      for (Object element : list) items.add(canonical(element));
      return items;
    }
    if (value.getClass().isArray()) {
      List<Object> items = new ArrayList<>();
      for (int i = 0; i < java.lang.reflect.Array.getLength(value); i++) items.add(canonical(java.lang.reflect.Array.get(value, i)));
      return items;
    }
    return value.toString();
  }

  private void report() {
    boolean ok = checks.values().stream().allMatch(c -> Boolean.TRUE.equals(c.get("ok")));
    System.out.println(Json.write(map("driver", "clickhouse-jdbc", "version", driverVersion(), "ok", ok, "checks", checks)));
    System.exit(ok ? 0 : 1);
  }

  private static String driverVersion() {
    try {
      java.sql.Driver driver = DriverManager.getDriver("jdbc:clickhouse://localhost");
      return Objects.requireNonNullElse(driver.getClass().getPackage().getImplementationVersion(), driver.getMajorVersion() + "." + driver.getMinorVersion());
    } catch (SQLException error) {
      return "unknown";
    }
  }

  private static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      System.err.println(name + " is not set");
      System.exit(2);
    }
    return value;
  }

  /** Just enough JSON: cases.json in, the report out. Numbers stay text. */
  static final class Json {
    private final String text;
    private int at;

    Json(String text) {
      this.text = text;
    }

    Object value() {
      skip();
      char c = text.charAt(at);
      if (c == '{') {
        Map<String, Object> object = new LinkedHashMap<>();
        at++;
        skip();
        if (text.charAt(at) == '}') { at++; return object; }
        while (true) {
          skip();
          String key = (String) value();
          skip();
          at++; // ':'
          object.put(key, value());
          skip();
          if (text.charAt(at++) == '}') return object;
        }
      }
      if (c == '[') {
        List<Object> array = new ArrayList<>();
        at++;
        skip();
        if (text.charAt(at) == ']') { at++; return array; }
        while (true) {
          array.add(value());
          skip();
          if (text.charAt(at++) == ']') return array;
        }
      }
      if (c == '"') {
        StringBuilder out = new StringBuilder();
        at++;
        while (true) {
          char d = text.charAt(at++);
          if (d == '"') return out.toString();
          if (d != '\\') { out.append(d); continue; }
          char e = text.charAt(at++);
          switch (e) {
            case 'n' -> out.append('\n');
            case 't' -> out.append('\t');
            case 'r' -> out.append('\r');
            case 'b' -> out.append('\b');
            case 'f' -> out.append('\f');
            case 'u' -> { out.append((char) Integer.parseInt(text.substring(at, at + 4), 16)); at += 4; }
            default -> out.append(e);
          }
        }
      }
      int start = at;
      while (at < text.length() && ",}] \n\r\t".indexOf(text.charAt(at)) < 0) at++;
      String word = text.substring(start, at);
      return switch (word) {
        case "null" -> null;
        case "true" -> Boolean.TRUE;
        case "false" -> Boolean.FALSE;
        default -> word;
      };
    }

    private void skip() {
      while (at < text.length() && Character.isWhitespace(text.charAt(at))) at++;
    }

    static String write(Object value) {
      if (value == null) return "null";
      if (value instanceof Boolean || value instanceof Number) return value.toString();
      if (value instanceof Map<?, ?> map) {
        StringBuilder out = new StringBuilder("{");
        for (Map.Entry<?, ?> entry : map.entrySet()) {
          if (out.length() > 1) out.append(',');
          out.append(write(String.valueOf(entry.getKey()))).append(':').append(write(entry.getValue()));
        }
        return out.append('}').toString();
      }
      if (value instanceof List<?> list) {
        StringBuilder out = new StringBuilder("[");
        for (Object item : list) {
          if (out.length() > 1) out.append(',');
          out.append(write(item));
        }
        return out.append(']').toString();
      }
      StringBuilder out = new StringBuilder("\"");
      for (char c : value.toString().toCharArray()) {
        switch (c) {
          case '"' -> out.append("\\\"");
          case '\\' -> out.append("\\\\");
          case '\n' -> out.append("\\n");
          case '\r' -> out.append("\\r");
          case '\t' -> out.append("\\t");
          default -> { if (c < 0x20) out.append(String.format("\\u%04x", (int) c)); else out.append(c); }
        }
      }
      return out.append('"').toString();
    }
  }
}
