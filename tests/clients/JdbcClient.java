// What DBeaver and Metabase do through the PostgreSQL JDBC driver on
// connect, then prepared statements past the driver's prepare threshold
// (so they become server-side prepared statements).
import java.sql.*;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/tessera?user=tessera&prepareThreshold=2";
        try (Connection conn = DriverManager.getConnection(url)) {
            DatabaseMetaData meta = conn.getMetaData();
            check(meta.getDatabaseProductName().equals("PostgreSQL"), "product name " + meta.getDatabaseProductName());
            check(meta.getDatabaseMajorVersion() >= 9, "major version " + meta.getDatabaseMajorVersion());
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE orders (id BIGINT NOT NULL, customer TEXT, amount DOUBLE PRECISION)");
            }
            boolean found = false;
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) found |= rs.getString("TABLE_NAME").equals("orders");
            }
            check(found, "getTables lists orders");
            int columns = 0;
            try (ResultSet rs = meta.getColumns(null, "public", "orders", "%")) {
                while (rs.next()) columns++;
            }
            check(columns == 3, "getColumns found " + columns);
            try (ResultSet rs = meta.getSchemas()) {
                boolean pub = false;
                while (rs.next()) pub |= rs.getString("TABLE_SCHEM").equals("public");
                check(pub, "getSchemas lists public");
            }
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO orders VALUES (?, ?, ?)")) {
                for (int i = 0; i < 10; i++) {
                    ins.setLong(1, i);
                    ins.setString(2, "c" + (i % 3));
                    ins.setDouble(3, i * 1.5);
                    check(ins.executeUpdate() == 1, "insert count");
                }
            }
            try (PreparedStatement q = conn.prepareStatement("SELECT customer, amount FROM orders WHERE id = ?")) {
                for (int i = 0; i < 10; i++) {
                    q.setLong(1, i);
                    try (ResultSet rs = q.executeQuery()) {
                        check(rs.next(), "row " + i);
                        check(rs.getString(1).equals("c" + (i % 3)), "customer of " + i);
                        check(rs.getDouble(2) == i * 1.5, "amount of " + i);
                        check(!rs.next(), "one row for " + i);
                    }
                }
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*), sum(amount) FROM orders")) {
                check(rs.next() && rs.getLong(1) == 10, "count");
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM missing");
                check(false, "no error for a missing table");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            }
        }
        System.out.println("jdbc ok");
    }
}
