//! End-to-end checks of the generated data: determinism, the documented
//! distributions, ground-truth coverage and CSV/Parquet equivalence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tessera_datagen::{
    generate, generate_batches, tables, time, Config, Error, Formats, JUNK_EMAILS, JUNK_PHONES,
    PEOPLE_FILE, PHONE_FORMATS, TRUTH_FILE,
};

type Row = Vec<Option<String>>;

/// A minimal RFC 4180 reader: an unquoted empty field is NULL (`None`), a
/// quoted empty field is the empty string. The generator never writes line
/// breaks inside fields, so records are lines.
fn parse_csv(bytes: &[u8]) -> (Vec<String>, Vec<Row>) {
    let text = std::str::from_utf8(bytes).expect("utf8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "file must end with a newline"
    );
    assert!(!text.contains('\r'), "unexpected CR");
    let mut rows: Vec<Row> = Vec::new();
    for line in text.lines() {
        if !line.contains('"') {
            rows.push(
                line.split(',')
                    .map(|f| {
                        if f.is_empty() {
                            None
                        } else {
                            Some(f.to_string())
                        }
                    })
                    .collect(),
            );
            continue;
        }
        let mut row: Row = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            let mut field = String::new();
            let quoted = chars.peek() == Some(&'"');
            if quoted {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                        None => panic!("unterminated quote in {line:?}"),
                    }
                }
            }
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                assert!(!quoted && c != '"', "stray quote in {line:?}");
                field.push(c);
                chars.next();
            }
            row.push(if field.is_empty() && !quoted {
                None
            } else {
                Some(field)
            });
            if chars.next().is_none() {
                break;
            }
        }
        rows.push(row);
    }
    let header = rows
        .remove(0)
        .into_iter()
        .map(|f| f.expect("header field"))
        .collect();
    (header, rows)
}

/// `truth.csv` as (table, row, person) triples.
fn read_truth(path: &Path) -> Vec<(String, usize, u64)> {
    let text = fs::read_to_string(path).expect("read truth");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("table,row,person_id"));
    lines
        .map(|l| {
            let mut it = l.split(',');
            let t = it.next().expect("table").to_string();
            let r = it.next().expect("row").parse().expect("row number");
            let p = it.next().expect("person").parse().expect("person id");
            assert!(it.next().is_none());
            (t, r, p)
        })
        .collect()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Row>) {
    parse_csv(&fs::read(path).expect("read csv"))
}

struct Table {
    header: Vec<String>,
    rows: Vec<Row>,
    persons: Vec<u64>,
}

impl Table {
    fn col(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    }
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = (u64, Option<&'a str>)> + 'a {
        let c = self.col(name);
        self.rows
            .iter()
            .zip(&self.persons)
            .map(move |(r, &p)| (p, r[c].as_deref()))
    }
}

struct Person {
    known: bool,
    household: Option<u64>,
    emails: Vec<String>,
    phones: Vec<String>,
    cookies: Vec<String>,
    shared_cookie: Option<String>,
    customer: bool,
    alive: bool,
    rate: f64,
    orders: u64,
}

struct Fixture {
    config: Config,
    summary: tessera_datagen::Summary,
    tables: BTreeMap<String, Table>,
    people: HashMap<u64, Person>,
}

fn split_list(s: &Option<String>) -> Vec<String> {
    match s {
        Some(s) if !s.is_empty() => s.split(';').map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn load(dir: &Path, config: Config, summary: tessera_datagen::Summary) -> Fixture {
    let truth = read_truth(&dir.join(TRUTH_FILE));
    let mut truth_by_table: HashMap<String, Vec<Option<u64>>> = HashMap::new();
    for spec in tables() {
        truth_by_table.insert(
            spec.name.to_string(),
            vec![None; summary.rows_of(spec.name) as usize],
        );
    }
    for (t, row, person) in truth {
        let slots = truth_by_table
            .get_mut(&t)
            .unwrap_or_else(|| panic!("truth names unknown table {t}"));
        assert!(row < slots.len(), "truth row {row} beyond {t}");
        assert!(slots[row].is_none(), "two truth entries for {t} row {row}");
        slots[row] = Some(person);
    }
    let mut tables_map = BTreeMap::new();
    for spec in tables() {
        let (header, rows) = read_csv(&dir.join(format!("{}.csv", spec.name)));
        let expected: Vec<&str> = spec.columns.iter().map(|c| c.name).collect();
        assert_eq!(header, expected, "{} header", spec.name);
        assert_eq!(rows.len() as u64, summary.rows_of(spec.name));
        for r in &rows {
            assert_eq!(r.len(), header.len(), "{} row width", spec.name);
        }
        let persons: Vec<u64> = truth_by_table[spec.name]
            .iter()
            .enumerate()
            .map(|(i, p)| p.unwrap_or_else(|| panic!("{} row {i} has no truth entry", spec.name)))
            .collect();
        tables_map.insert(
            spec.name.to_string(),
            Table {
                header,
                rows,
                persons,
            },
        );
    }
    let (ph, prows) = read_csv(&dir.join(PEOPLE_FILE));
    let pc = |n: &str| {
        ph.iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let mut people = HashMap::new();
    for r in &prows {
        let id: u64 = r[pc("person_id")]
            .as_deref()
            .expect("id")
            .parse()
            .expect("id");
        let p = Person {
            known: r[pc("kind")].as_deref() == Some("known"),
            household: r[pc("household_id")]
                .as_deref()
                .map(|h| h.parse().expect("household")),
            emails: split_list(&r[pc("emails")]),
            phones: split_list(&r[pc("phones")]),
            cookies: split_list(&r[pc("cookies")]),
            shared_cookie: r[pc("shared_cookie")].clone(),
            customer: r[pc("customer")].as_deref() == Some("true"),
            alive: r[pc("alive")].as_deref() == Some("true"),
            rate: r[pc("rate")]
                .as_deref()
                .map_or(0.0, |x| x.parse().expect("rate")),
            orders: r[pc("orders")]
                .as_deref()
                .expect("orders")
                .parse()
                .expect("orders"),
        };
        assert!(people.insert(id, p).is_none(), "person {id} twice");
    }
    assert_eq!(people.len() as u64, config.people);
    Fixture {
        config,
        summary,
        tables: tables_map,
        people,
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            people: 20_000,
            seed: 11,
            ..Config::default()
        };
        let summary = generate(&config, dir.path(), Formats::CSV).expect("generate");
        load(dir.path(), config, summary)
    })
}

fn within(name: &str, value: f64, lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&value),
        "{name} = {value:.4}, expected in [{lo}, {hi}]"
    );
}

fn norm_email(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

fn norm_phone(s: &str) -> String {
    let d: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    if d.len() == 11 && d.starts_with('1') {
        d[1..].to_string()
    } else {
        d
    }
}

fn phone_format(s: &str) -> Option<usize> {
    let shape: String = s
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    let shape = shape.replacen("+9", "+1", 1);
    PHONE_FORMATS.iter().position(|f| {
        let fs: String = f
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        fs.replacen("+9", "+1", 1) == shape
    })
}

// ----- determinism -----------------------------------------------------------

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            fs::read(e.path()).expect("read"),
        );
    }
    m
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seed_differs() {
    let run = |seed: u64, threads: usize| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            people: 6_000,
            seed,
            threads,
            ..Config::default()
        };
        generate(&config, dir.path(), Formats::BOTH).expect("generate");
        files_of(dir.path())
    };
    let a = run(7, 1);
    let b = run(7, 3);
    assert_eq!(a.len(), 2 * tables().len() + 2);
    for (name, bytes) in &a {
        assert!(
            b[name] == *bytes,
            "{name} differs between runs with the same seed"
        );
    }
    let c = run(8, 0);
    for spec in tables() {
        let name = format!("{}.csv", spec.name);
        assert!(
            a[&name] != c[&name],
            "{name} is the same for different seeds"
        );
    }
}

// ----- truth coverage and references ----------------------------------------

#[test]
fn every_row_has_exactly_one_truth_entry() {
    let f = fixture();
    // `load` checked uniqueness and coverage; the totals must agree too.
    let total: usize = f.tables.values().map(|t| t.rows.len()).sum();
    assert_eq!(total as u64, f.summary.truth_rows);
    assert_eq!(
        f.summary.known_people + f.summary.anonymous_people,
        f.config.people
    );
    for t in f.tables.values() {
        for &p in &t.persons {
            assert!(f.people.contains_key(&p), "unknown person {p}");
        }
    }
}

#[test]
fn identifiers_in_rows_belong_to_their_true_person() {
    let f = fixture();
    let junk_e: HashSet<&str> = JUNK_EMAILS.iter().copied().collect();
    let junk_p: HashSet<&str> = JUNK_PHONES.iter().copied().collect();
    // Store phones: numbers in pos_orders that belong to no person.
    let mut owner: HashMap<String, u64> = HashMap::new();
    for (&id, p) in &f.people {
        for e in &p.emails {
            assert!(
                owner.insert(e.clone(), id).is_none(),
                "e-mail {e} has two owners"
            );
        }
        for ph in &p.phones {
            assert!(
                owner.insert(norm_phone(ph), id).is_none(),
                "phone {ph} has two owners"
            );
        }
    }
    let mut store_phones = HashSet::new();
    for t in f.tables.values() {
        for col in ["email", "phone"] {
            if !t.header.iter().any(|h| h == col) {
                continue;
            }
            for (person, v) in t.values(col) {
                let Some(v) = v else { continue };
                if col == "email" {
                    if junk_e.contains(v) {
                        continue;
                    }
                    assert_eq!(
                        owner.get(&norm_email(v)),
                        Some(&person),
                        "e-mail {v:?} of person {person}"
                    );
                } else {
                    if junk_p.contains(v) {
                        continue;
                    }
                    match owner.get(&norm_phone(v)) {
                        Some(&o) => assert_eq!(o, person, "phone {v:?}"),
                        None => {
                            store_phones.insert(norm_phone(v));
                        }
                    }
                }
            }
        }
    }
    assert!(!store_phones.is_empty() && store_phones.len() <= f.config.store_phones as usize);
    for p in &store_phones {
        assert_eq!(p.len(), 10);
    }
    // Cookies belong to the person or their household's shared device.
    let web = &f.tables["web_events"];
    for (person, c) in web.values("cookie_id") {
        let c = c.expect("cookie");
        let p = &f.people[&person];
        assert!(
            p.cookies.iter().any(|x| x == c) || p.shared_cookie.as_deref() == Some(c),
            "cookie {c} of person {person}"
        );
    }
    // User ids, loyalty ids, contact ids and subscriber ids each map to one person.
    let one_owner = |pairs: Vec<(u64, String)>, what: &str| {
        let mut m: HashMap<String, u64> = HashMap::new();
        for (p, id) in pairs {
            if let Some(&o) = m.get(&id) {
                assert_eq!(o, p, "{what} {id} has two persons");
            }
            m.insert(id, p);
        }
        m
    };
    let users: Vec<(u64, String)> = web
        .values("user_id")
        .filter_map(|(p, u)| u.map(|u| (p, u.to_string())))
        .collect();
    assert!(!users.is_empty());
    one_owner(users, "user id");
    let loyalty = &f.tables["loyalty_members"];
    let mut members = one_owner(
        loyalty
            .values("member_id")
            .map(|(p, m)| (p, m.expect("id").to_string()))
            .collect(),
        "member",
    );
    assert_eq!(members.len(), loyalty.rows.len(), "member ids unique");
    for (p, l) in f.tables["pos_orders"].values("loyalty_id") {
        if let Some(l) = l {
            assert_eq!(
                members.remove(l).map_or(p, |o| o),
                p,
                "order loyalty id {l}"
            );
        }
    }
    let crm = &f.tables["crm_contacts"];
    let contacts: HashSet<&str> = crm
        .values("contact_id")
        .map(|(_, c)| c.expect("id"))
        .collect();
    assert_eq!(contacts.len(), crm.rows.len(), "contact ids unique");
    let subs = &f.tables["email_subscribers"];
    let sub_ids: HashSet<&str> = subs
        .values("subscriber_id")
        .map(|(_, c)| c.expect("id"))
        .collect();
    assert_eq!(sub_ids.len(), subs.rows.len(), "subscriber ids unique");
    let orders = &f.tables["pos_orders"];
    let order_ids: HashSet<&str> = orders
        .values("order_id")
        .map(|(_, c)| c.expect("id"))
        .collect();
    assert_eq!(order_ids.len(), orders.rows.len(), "order ids unique");
}

// ----- documented distributions ---------------------------------------------

fn known(f: &Fixture) -> f64 {
    f.summary.known_people as f64
}

#[test]
fn population_and_identifier_counts() {
    let f = fixture();
    within(
        "anonymous fraction",
        f.summary.anonymous_people as f64 / f.config.people as f64,
        0.18,
        0.22,
    );
    let with_email: Vec<&Person> = f
        .people
        .values()
        .filter(|p| p.known && !p.emails.is_empty())
        .collect();
    within(
        "no e-mail",
        1.0 - with_email.len() as f64 / known(f),
        0.065,
        0.095,
    );
    let n = with_email.len() as f64;
    within(
        "two e-mails",
        with_email.iter().filter(|p| p.emails.len() == 2).count() as f64 / n,
        0.185,
        0.215,
    );
    within(
        "three e-mails",
        with_email.iter().filter(|p| p.emails.len() == 3).count() as f64 / n,
        0.042,
        0.058,
    );
    let with_phone: Vec<&Person> = f
        .people
        .values()
        .filter(|p| p.known && !p.phones.is_empty())
        .collect();
    let n = with_phone.len() as f64;
    within("no phone", 1.0 - n / known(f), 0.085, 0.115);
    within(
        "two phones",
        with_phone.iter().filter(|p| p.phones.len() == 2).count() as f64 / n,
        0.135,
        0.165,
    );
    // Anonymous visitors appear only in web events, without user id or e-mail.
    for t in f.tables.values() {
        for (i, &p) in t.persons.iter().enumerate() {
            if !f.people[&p].known {
                let web = &f.tables["web_events"];
                assert!(
                    std::ptr::eq(t, web),
                    "anonymous person {p} in another table"
                );
                assert!(
                    t.rows[i][t.col("user_id")].is_none() && t.rows[i][t.col("email")].is_none()
                );
            }
        }
    }
}

#[test]
fn crm_coverage_and_duplicates() {
    let f = fixture();
    let crm = &f.tables["crm_contacts"];
    let mut per_person: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, &p) in crm.persons.iter().enumerate() {
        per_person.entry(p).or_default().push(i);
    }
    within(
        "CRM coverage",
        per_person.len() as f64 / known(f),
        0.585,
        0.615,
    );
    let dups: Vec<&Vec<usize>> = per_person.values().filter(|v| v.len() > 1).collect();
    assert!(per_person.values().all(|v| v.len() <= 2));
    within(
        "CRM duplicates",
        dups.len() as f64 / per_person.len() as f64,
        0.02,
        0.04,
    );
    let (e, ph) = (crm.col("email"), crm.col("phone"));
    let differing = dups
        .iter()
        .filter(|v| {
            let (a, b) = (&crm.rows[v[0]], &crm.rows[v[1]]);
            a[e].as_deref().map(norm_email) != b[e].as_deref().map(norm_email)
                || a[ph].as_deref().map(norm_phone) != b[ph].as_deref().map(norm_phone)
        })
        .count();
    within(
        "duplicates differing in e-mail or phone",
        differing as f64 / dups.len() as f64,
        0.85,
        1.0,
    );
}

#[test]
fn noise_rates() {
    let f = fixture();
    let (mut emails, mut junk_emails, mut varied) = (0usize, 0usize, 0usize);
    let (mut phones, mut junk_phones) = (0usize, 0usize);
    let mut formats = [0usize; 6];
    for (name, t) in &f.tables {
        // E-mail events repeat the subscriber's address as recorded once.
        if name != "email_events" && t.header.iter().any(|h| h == "email") {
            for (_, v) in t.values("email") {
                let Some(v) = v else { continue };
                emails += 1;
                if JUNK_EMAILS.contains(&v) {
                    junk_emails += 1;
                } else if norm_email(v) != v {
                    varied += 1;
                }
            }
        }
        if t.header.iter().any(|h| h == "phone") {
            for (_, v) in t.values("phone") {
                let Some(v) = v else { continue };
                phones += 1;
                if JUNK_PHONES.contains(&v) {
                    junk_phones += 1;
                } else {
                    let fmt =
                        phone_format(v).unwrap_or_else(|| panic!("unknown phone format {v:?}"));
                    formats[fmt] += 1;
                }
            }
        }
    }
    within(
        "junk e-mail fraction",
        junk_emails as f64 / emails as f64,
        0.008,
        0.012,
    );
    within(
        "junk phone fraction",
        junk_phones as f64 / phones as f64,
        0.007,
        0.013,
    );
    // Case (10%) or whitespace (3%) variation, overlapping.
    within(
        "varied e-mail fraction",
        varied as f64 / emails as f64,
        0.11,
        0.145,
    );
    let weights = Config::default().noise.phone_format_weights;
    let wsum: f64 = weights.iter().sum();
    let total: usize = formats.iter().sum();
    for (i, &c) in formats.iter().enumerate() {
        let expected = weights[i] / wsum;
        within(
            &format!("phone format {}", PHONE_FORMATS[i]),
            c as f64 / total as f64,
            expected - 0.015,
            expected + 0.015,
        );
    }
    // Nicknames and typos: some CRM first names are not the canonical name.
    let crm = &f.tables["crm_contacts"];
    let names: HashSet<&str> = crm.values("first_name").filter_map(|(_, v)| v).collect();
    for nick in ["Bob", "Bill", "Liz", "Kate"] {
        assert!(names.contains(nick), "nickname {nick} never used");
    }
}

#[test]
fn volumes_per_known_person() {
    let f = fixture();
    let web_known = f.tables["web_events"]
        .persons
        .iter()
        .filter(|p| f.people[p].known)
        .count();
    within(
        "web events per known person",
        web_known as f64 / known(f),
        18.0,
        22.5,
    );
    within(
        "e-mail events per known person",
        f.tables["email_events"].rows.len() as f64 / known(f),
        4.4,
        5.6,
    );
    within(
        "orders per known person",
        f.tables["pos_orders"].rows.len() as f64 / known(f),
        3.0,
        4.0,
    );
    // Most web rows are anonymous (cookie only).
    let web = &f.tables["web_events"];
    let identified = web.values("user_id").filter(|(_, u)| u.is_some()).count();
    within(
        "identified web rows",
        identified as f64 / web.rows.len() as f64,
        0.03,
        0.35,
    );
}

#[test]
fn shared_devices_and_store_phone_hub() {
    let f = fixture();
    let web = &f.tables["web_events"];
    let mut cookie_people: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (p, c) in web.values("cookie_id") {
        cookie_people
            .entry(c.expect("cookie"))
            .or_default()
            .insert(p);
    }
    let shared: Vec<&HashSet<u64>> = cookie_people.values().filter(|s| s.len() > 1).collect();
    assert!(shared.len() > 100, "only {} shared cookies", shared.len());
    for s in &shared {
        assert!(s.len() <= 4);
        let hh: HashSet<Option<u64>> = s.iter().map(|p| f.people[p].household).collect();
        assert_eq!(hh.len(), 1, "a shared cookie spans households");
    }
    let pos = &f.tables["pos_orders"];
    let mut phone_people: HashMap<String, HashSet<u64>> = HashMap::new();
    for (p, ph) in pos.values("phone") {
        if let Some(ph) = ph.filter(|v| !JUNK_PHONES.contains(v)) {
            phone_people.entry(norm_phone(ph)).or_default().insert(p);
        }
    }
    let hub = phone_people.values().map(HashSet::len).max().unwrap_or(0);
    assert!(hub >= 100, "largest phone hub has only {hub} persons");
    let guests = pos
        .rows
        .iter()
        .filter(|r| r[pos.col("loyalty_id")].is_none() && r[pos.col("phone")].is_none())
        .count();
    within(
        "orders with neither loyalty id nor phone",
        guests as f64 / pos.rows.len() as f64,
        0.15,
        0.30,
    );
}

#[test]
fn purchases_follow_the_btyd_truth() {
    let f = fixture();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for &p in &f.tables["pos_orders"].persons {
        *counts.entry(p).or_default() += 1;
    }
    let customers: Vec<(&u64, &Person)> = f.people.iter().filter(|(_, p)| p.customer).collect();
    within(
        "store customers",
        customers.len() as f64 / known(f),
        0.83,
        0.87,
    );
    for (id, p) in &f.people {
        assert_eq!(
            counts.get(id).copied().unwrap_or(0),
            p.orders,
            "orders of person {id}"
        );
        if !p.customer {
            assert_eq!(p.orders, 0);
        }
    }
    let b = &f.config.btyd;
    let mean_rate = customers.iter().map(|(_, p)| p.rate).sum::<f64>() / customers.len() as f64;
    within(
        "mean purchase rate",
        mean_rate,
        0.92 * b.rate_shape / b.rate_rate,
        1.08 * b.rate_shape / b.rate_rate,
    );
    let alive = customers.iter().filter(|(_, p)| p.alive).count() as f64 / customers.len() as f64;
    within("alive at end", alive, 0.05, 0.6);
    // Alive customers buy more in the window than those who dropped out.
    let avg = |alive: bool| {
        let v: Vec<u64> = customers
            .iter()
            .filter(|(_, p)| p.alive == alive)
            .map(|(_, p)| p.orders)
            .collect();
        v.iter().sum::<u64>() as f64 / v.len() as f64
    };
    assert!(avg(true) > avg(false));
    // Orders fall inside the window.
    let start = f.config.window_start();
    let pos = &f.tables["pos_orders"];
    for (_, t) in pos.values("ordered_at") {
        let t = time::parse_timestamp(t.expect("ts")).expect("timestamp");
        assert!((start..f.config.window_end).contains(&t));
    }
    for (_, a) in pos.values("amount") {
        let a: f64 = a.expect("amount").parse().expect("amount");
        assert!(a > 0.0);
    }
}

#[test]
fn consent_events_are_well_formed() {
    let f = fixture();
    let c = &f.tables["consent_events"];
    let mut seen: HashSet<u64> = HashSet::new();
    for (i, &p) in c.persons.iter().enumerate() {
        assert!(!f.people[&p].emails.is_empty());
        let purpose = c.rows[i][c.col("purpose")].as_deref().expect("purpose");
        assert!(["email_marketing", "ads_personalization", "analytics"].contains(&purpose));
        assert!(matches!(
            c.rows[i][c.col("granted")].as_deref(),
            Some("true" | "false")
        ));
        seen.insert(p);
    }
    let with_email = f.people.values().filter(|p| !p.emails.is_empty()).count();
    assert_eq!(
        seen.len(),
        with_email,
        "every person with e-mail has consent events"
    );
    let withdrawn = c
        .values("granted")
        .filter(|(_, g)| *g == Some("false"))
        .count();
    assert!(withdrawn > 0);
}

// ----- formats ---------------------------------------------------------------

fn parquet_rows(path: &Path) -> (Vec<String>, Vec<Row>) {
    let file = fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        if header.is_empty() {
            header = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        for r in 0..batch.num_rows() {
            let mut row = Vec::with_capacity(batch.num_columns());
            for col in batch.columns() {
                if col.is_null(r) {
                    row.push(None);
                    continue;
                }
                let any = col.as_any();
                let v = match col.data_type() {
                    DataType::Utf8 => any
                        .downcast_ref::<StringArray>()
                        .expect("utf8")
                        .value(r)
                        .to_string(),
                    DataType::Int64 => any
                        .downcast_ref::<Int64Array>()
                        .expect("i64")
                        .value(r)
                        .to_string(),
                    DataType::Float64 => format!(
                        "{:.2}",
                        any.downcast_ref::<Float64Array>().expect("f64").value(r)
                    ),
                    DataType::Boolean => any
                        .downcast_ref::<BooleanArray>()
                        .expect("bool")
                        .value(r)
                        .to_string(),
                    DataType::Timestamp(_, None) => time::format_timestamp(
                        any.downcast_ref::<TimestampMicrosecondArray>()
                            .expect("ts")
                            .value(r)
                            / 1_000_000,
                    ),
                    other => panic!("unexpected type {other}"),
                };
                row.push(Some(v));
            }
            rows.push(row);
        }
    }
    (header, rows)
}

#[test]
fn csv_and_parquet_hold_the_same_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        people: 5_000,
        seed: 3,
        ..Config::default()
    };
    let summary = generate(&config, dir.path(), Formats::BOTH).expect("generate");
    for spec in tables() {
        let (ch, crows) = read_csv(&dir.path().join(format!("{}.csv", spec.name)));
        let (ph, prows) = parquet_rows(&dir.path().join(format!("{}.parquet", spec.name)));
        assert_eq!(ch, ph, "{} columns", spec.name);
        assert_eq!(crows.len() as u64, summary.rows_of(spec.name));
        assert_eq!(crows.len(), prows.len(), "{} row count", spec.name);
        for (i, (a, b)) in crows.iter().zip(&prows).enumerate() {
            assert_eq!(a, b, "{} row {i}", spec.name);
        }
    }
    // The in-memory API yields the same rows and truth.
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut persons: HashMap<&str, Vec<u64>> = HashMap::new();
    let mem = generate_batches(&config, |spec, batch, ps| {
        *counts.entry(spec.name).or_default() += batch.num_rows() as u64;
        persons.entry(spec.name).or_default().extend_from_slice(ps);
        Ok(())
    })
    .expect("generate_batches");
    assert_eq!(mem.rows, summary.rows);
    let mut from_file: HashMap<String, Vec<u64>> = HashMap::new();
    for (t, _, p) in read_truth(&dir.path().join(TRUTH_FILE)) {
        from_file.entry(t).or_default().push(p);
    }
    for spec in tables() {
        assert_eq!(
            counts.get(spec.name).copied().unwrap_or(0),
            summary.rows_of(spec.name)
        );
        assert_eq!(
            persons.get(spec.name).cloned().unwrap_or_default(),
            from_file.get(spec.name).cloned().unwrap_or_default()
        );
    }
}

#[test]
fn empty_and_invalid_configurations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = generate(&Config::new(0, 1), dir.path(), Formats::BOTH).expect("empty run");
    assert_eq!(s.total_rows(), 0);
    let (h, rows) = read_csv(&dir.path().join("web_events.csv"));
    assert_eq!(h.len(), 6);
    assert!(rows.is_empty());
    assert_eq!(
        parquet_rows(&dir.path().join("web_events.parquet")).1.len(),
        0
    );

    let bad = Config {
        crm_rate: 1.5,
        ..Config::default()
    };
    assert!(matches!(
        generate(&bad, dir.path(), Formats::CSV),
        Err(Error::InvalidConfig(_))
    ));
    let bad = Config {
        noise: tessera_datagen::Noise {
            junk_rate: -0.1,
            ..Default::default()
        },
        ..Config::default()
    };
    assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))));
    assert!("both".parse::<Formats>().is_ok());
    assert!("xml".parse::<Formats>().is_err());
    // Stopping from the callback is reported, not swallowed.
    let r = generate_batches(&Config::new(100, 1), |_, _, _| {
        Err(Error::Callback("stop".into()))
    });
    assert!(matches!(r, Err(Error::Callback(_))));
}

#[test]
fn command_line_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-generate"))
        .args([
            "--people", "300", "--seed", "5", "--format", "parquet", "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("run tessera-generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("300 persons"));
    for spec in tables() {
        assert!(dir.path().join(format!("{}.parquet", spec.name)).exists());
        assert!(!dir.path().join(format!("{}.csv", spec.name)).exists());
    }
    assert!(dir.path().join(TRUTH_FILE).exists() && dir.path().join(PEOPLE_FILE).exists());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-generate"))
        .args(["--format", "xml"])
        .output()
        .expect("run tessera-generate");
    assert!(!bad.status.success());
}
