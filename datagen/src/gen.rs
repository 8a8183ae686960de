//! The person-level simulation: households, identifiers, and each source's
//! records of them. Persons are generated in fixed-size chunks; each chunk has
//! its own random stream, so chunks can be generated in any order and on any
//! number of threads with identical results.

use std::fmt::Write as _;

use crate::buffer::{push_cents, push_u64, TableBuf, NULL_TS};
use crate::config::Config;
use crate::names::{
    valid_exchange, FirstName, AREA_CODES, CITIES, EMAIL_DOMAINS, FEMALE, LAST, MALE, SEARCH_TERMS,
    STREET_NAMES, STREET_SUFFIXES, WEB_CATEGORIES,
};
use crate::noise::{
    email_text, email_token, first_name_text, format_phone, name_text, phone_text, Perm,
};
use crate::rng::{mix64, Rng};
use crate::schema::{
    tables, CONSENT, CRM, EMAIL_EVENTS, LOYALTY, POS, SUBSCRIBERS, TABLE_COUNT, WEB,
};
use crate::time::{push_timestamp, DAY};

/// Persons per chunk. Fixed: changing it changes the output.
pub(crate) const CHUNK_PEOPLE: u64 = 4096;

const EXCHANGES: usize = 787;
const LINES: u64 = 10_000;
/// Size of the phone number space (area codes x exchanges x lines).
const PHONE_SPACE: u64 = AREA_CODES.len() as u64 * EXCHANGES as u64 * LINES;
/// Reserved phone indices at the top of the space (store phones).
const RESERVED_PHONES: u64 = 1024;
/// Each person owns phone indices `4 * pid .. 4 * pid + 3`.
pub(crate) const MAX_PEOPLE: u64 = (PHONE_SPACE - RESERVED_PHONES) / 4 - 1;

/// Upper bound on one customer's simulated purchases.
const MAX_PURCHASES: usize = 5_000;

const PURPOSES: [&str; 3] = ["email_marketing", "ads_personalization", "analytics"];
const SITE: &str = "https://shop.example.com";

/// Values computed once from the configuration.
pub(crate) struct Derived {
    start: i64,
    end: i64,
    history_start: i64,
    /// Probability that a household draw is an anonymous visitor instead.
    anon_draw: f64,
    sessions_per_person: f64,
    anon_extra_sessions: f64,
    open_prob_mean: f64,
    campaign_interval: i64,
    campaigns: i64,
    exchanges: Vec<u16>,
    phone_perm: Perm,
    email_perm: Perm,
    cookie_key: u64,
    domain_weights: Vec<f64>,
    city_weights: Vec<f64>,
    store_phones: Vec<u64>,
}

impl Derived {
    pub(crate) fn new(cfg: &Config) -> Derived {
        let end = cfg.window_end;
        let start = cfg.window_start();
        let history_start = start - i64::from(cfg.history_days) * DAY;

        // Persons are drawn as households of known persons or single
        // anonymous visitors; choose the per-draw probability so that the
        // expected fraction of anonymous persons is `anonymous_rate`.
        let w = &cfg.household_size_weights;
        let wsum: f64 = w.iter().sum();
        let mean_size: f64 = w
            .iter()
            .enumerate()
            .map(|(i, x)| (i + 1) as f64 * x)
            .sum::<f64>()
            / wsum;
        let f = cfg.anonymous_rate;
        let anon_draw = if f >= 1.0 {
            1.0
        } else {
            f * mean_size / (1.0 - f + f * mean_size)
        };

        // Web sessions: each session has on average `events_per_session`
        // events, plus a login event in logged-in sessions.
        let p_email = 1.0 - cfg.no_email_rate;
        let login_share = p_email * cfg.account_rate * cfg.login_rate;
        let sessions_per_person =
            cfg.web_events_per_person / (cfg.events_per_session + login_share);
        let anon_extra_sessions =
            (cfg.anonymous_web_events / cfg.events_per_session - 1.0).max(0.0);

        // E-mail campaigns, and the mean per-campaign open probability that
        // gives `email_events_per_person` events per known person.
        let campaign_interval = ((cfg.campaign_interval_days * DAY as f64).round() as i64).max(60);
        let campaigns = ((end - start - 10 * 3600).max(0)) / campaign_interval + 1;
        let u = cfg.unsubscribe_rate;
        let pre = cfg.pre_window_rate;
        let active = campaigns as f64
            * (pre * ((1.0 - u) + u / 2.0) + (1.0 - pre) * ((1.0 - u) / 2.0 + u / 4.0));
        let extra_emails = cfg.two_emails_rate + 2.0 * cfg.three_emails_rate;
        let subscriptions =
            p_email * cfg.subscriber_rate * (1.0 + cfg.extra_subscription_rate * extra_emails);
        let denom = subscriptions * (1.0 - cfg.noise.junk_rate) * active * (1.0 + cfg.click_rate);
        let open_prob_mean = if denom > 0.0 {
            (cfg.email_events_per_person / denom).min(0.95)
        } else {
            0.0
        };

        let exchanges: Vec<u16> = (200u16..=999).filter(|&x| valid_exchange(x)).collect();
        debug_assert_eq!(exchanges.len(), EXCHANGES);
        let phone_perm = Perm::new(PHONE_SPACE, cfg.seed, 0x50_48_4F_4E_45);
        let email_perm = Perm::new(4 * (cfg.people + 2), cfg.seed, 0x45_4D_41_49_4C);
        let store_phones = (0..u64::from(cfg.store_phones))
            .map(|i| phone_number(&phone_perm, &exchanges, PHONE_SPACE - 1 - i))
            .collect();

        Derived {
            start,
            end,
            history_start,
            anon_draw,
            sessions_per_person,
            anon_extra_sessions,
            open_prob_mean,
            campaign_interval,
            campaigns,
            exchanges,
            phone_perm,
            email_perm,
            cookie_key: crate::rng::derive(cfg.seed, &[0x43_4F_4F_4B]),
            domain_weights: EMAIL_DOMAINS.iter().map(|d| d.1).collect(),
            city_weights: CITIES.iter().map(|c| c.weight).collect(),
            store_phones,
        }
    }
}

/// The 10-digit number for phone index `i`.
fn phone_number(perm: &Perm, exchanges: &[u16], i: u64) -> u64 {
    let j = perm.apply(i);
    let per_area = exchanges.len() as u64 * LINES;
    let area = u64::from(AREA_CODES[(j / per_area) as usize]);
    let rem = j % per_area;
    let exch = u64::from(exchanges[(rem / LINES) as usize]);
    area * 10_000_000 + exch * LINES + rem % LINES
}

/// Everything generated for one chunk of persons.
pub(crate) struct Chunk {
    pub(crate) tables: Vec<TableBuf>,
    /// Web accounts created in this chunk (user ids are numbered globally in
    /// chunk order).
    pub(crate) users: u32,
    /// `truth_people.csv` lines for the chunk.
    pub(crate) people_csv: Vec<u8>,
    pub(crate) known: u64,
    pub(crate) anonymous: u64,
}

struct Household {
    id: u64,
    last: &'static str,
    city: usize,
    street_no: u32,
    street: usize,
    suffix: usize,
    apt: Option<u32>,
    zip: u32,
    shared_cookie: Option<u64>,
    home_store: u32,
}

struct Person {
    pid: u64,
    first: &'static FirstName,
    last: &'static str,
    emails: Vec<String>,
    phones: Vec<u64>,
    cookies: Vec<u64>,
}

/// One subscription of a person (for consent events).
struct Subscription {
    email_index: usize,
    subscribed_at: i64,
    unsubscribed_at: Option<i64>,
}

struct Gen<'a> {
    cfg: &'a Config,
    d: &'a Derived,
    rng: Rng,
    t: Vec<TableBuf>,
    crm_dups: TableBuf,
    users: u32,
    people_csv: Vec<u8>,
    // Scratch strings.
    s1: String,
    s2: String,
    s3: String,
    s4: String,
    s5: String,
}

/// Number of chunks for `people` persons.
pub(crate) fn chunk_count(people: u64) -> u64 {
    people.div_ceil(CHUNK_PEOPLE)
}

/// Generates chunk `index`: persons `index * CHUNK_PEOPLE + 1 ..`.
pub(crate) fn generate_chunk(cfg: &Config, d: &Derived, index: u64) -> Chunk {
    let specs = tables();
    let mut g = Gen {
        cfg,
        d,
        rng: Rng::new(cfg.seed, &[0x43_48_55_4E_4B, index]),
        t: (0..TABLE_COUNT)
            .map(|i| TableBuf::new(i, &specs[i]))
            .collect(),
        crm_dups: TableBuf::new(CRM, &specs[CRM]),
        users: 0,
        people_csv: Vec::with_capacity(CHUNK_PEOPLE as usize * 120),
        s1: String::new(),
        s2: String::new(),
        s3: String::new(),
        s4: String::new(),
        s5: String::new(),
    };
    let first = index * CHUNK_PEOPLE + 1;
    let last = ((index + 1) * CHUNK_PEOPLE).min(cfg.people);
    let (mut known, mut anonymous) = (0u64, 0u64);
    let mut pid = first;
    while pid <= last {
        if g.rng.chance(d.anon_draw) {
            g.anonymous(pid);
            anonymous += 1;
            pid += 1;
            continue;
        }
        let size = (1 + g.rng.weighted(&cfg.household_size_weights) as u64).min(last - pid + 1);
        let hh = g.household(pid, size);
        for k in 0..size {
            g.known(pid + k, &hh, k == 0);
        }
        known += size;
        pid += size;
    }
    let mut t = g.t;
    let dups = g.crm_dups;
    t[CRM].append(dups);
    // Event tables are in time order within a chunk, as an export would be.
    t[EMAIL_EVENTS].sort_by_time(3);
    t[WEB].sort_by_time(5);
    t[POS].sort_by_time(5);
    t[CONSENT].sort_by_time(3);
    debug_assert!(t.iter().all(|b| b.check()));
    Chunk {
        tables: t,
        users: g.users,
        people_csv: g.people_csv,
        known,
        anonymous,
    }
}

impl Gen<'_> {
    fn uniform_time(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.range_i64(lo, (hi - 1).max(lo))
    }

    fn household(&mut self, leader: u64, size: u64) -> Household {
        let cfg = self.cfg;
        let city = self.rng.weighted(&self.d.city_weights);
        let shared_cookie = if size >= 2 && self.rng.chance(cfg.shared_device_rate) {
            Some(mix64(self.d.cookie_key ^ (leader * 8 + 7)))
        } else {
            None
        };
        Household {
            id: leader,
            last: self.rng.pick(LAST),
            city,
            street_no: 1 + self.rng.below(9899) as u32 + if self.rng.chance(0.3) { 0 } else { 100 },
            street: self.rng.index(STREET_NAMES.len()),
            suffix: self.rng.index(STREET_SUFFIXES.len()),
            apt: if self.rng.chance(0.25) {
                Some(1 + self.rng.below(40) as u32)
            } else {
                None
            },
            zip: u32::from(CITIES[city].zip3) * 100 + self.rng.below(100) as u32,
            shared_cookie,
            home_store: self.rng.below(u64::from(cfg.store_count)) as u32,
        }
    }

    fn cookie(&self, counter: u64) -> u64 {
        mix64(self.d.cookie_key ^ counter)
    }

    fn make_email(&mut self, first: &FirstName, last: &str, pid: u64, k: u64) -> String {
        let fname = if !first.nicknames.is_empty() && self.rng.chance(0.15) {
            self.rng.pick(first.nicknames)
        } else {
            first.name
        };
        let mut f = String::new();
        email_token(fname, &mut f);
        let mut l = String::new();
        email_token(last, &mut l);
        // A number unique to (person, address) keeps addresses globally
        // unique; it is a permutation, so it does not reveal the person.
        let n = self.d.email_perm.apply(pid * 4 + k);
        let mut s = String::with_capacity(40);
        let fi = &f[..f.len().min(1)];
        let li = &l[..l.len().min(1)];
        match self.rng.below(8) {
            0 | 1 => {
                let _ = write!(s, "{f}.{l}{n}");
            }
            2 => {
                let _ = write!(s, "{f}{l}{n}");
            }
            3 => {
                let _ = write!(s, "{fi}{l}{n}");
            }
            4 => {
                let _ = write!(s, "{f}_{l}{n}");
            }
            5 => {
                let _ = write!(s, "{l}.{f}{n}");
            }
            6 => {
                let _ = write!(s, "{f}.{li}{n}");
            }
            _ => {
                let _ = write!(s, "{f}{n}");
            }
        }
        s.push('@');
        s.push_str(EMAIL_DOMAINS[self.rng.weighted(&self.d.domain_weights)].0);
        s
    }

    fn person(&mut self, pid: u64, hh: &Household, leader: bool) -> Person {
        let cfg = self.cfg;
        let names = if self.rng.chance(0.5) { FEMALE } else { MALE };
        let first = &names[self.rng.index(names.len())];
        let last = if leader || self.rng.chance(cfg.household_same_last_name) {
            hh.last
        } else {
            self.rng.pick(LAST)
        };
        let n_emails = if self.rng.chance(cfg.no_email_rate) {
            0
        } else {
            let u = self.rng.f64();
            if u < cfg.three_emails_rate {
                3
            } else if u < cfg.three_emails_rate + cfg.two_emails_rate {
                2
            } else {
                1
            }
        };
        let emails = (0..n_emails)
            .map(|k| self.make_email(first, last, pid, k))
            .collect();
        let n_phones = if self.rng.chance(cfg.no_phone_rate) {
            0
        } else {
            let u = self.rng.f64();
            if u < cfg.three_phones_rate {
                3
            } else if u < cfg.three_phones_rate + cfg.two_phones_rate {
                2
            } else {
                1
            }
        };
        let phones = (0..n_phones)
            .map(|k| phone_number(&self.d.phone_perm, &self.d.exchanges, pid * 4 + k))
            .collect();
        let n_cookies = 1 + self.rng.weighted(&cfg.cookie_count_weights) as u64;
        let cookies = (0..n_cookies).map(|i| self.cookie(pid * 8 + i)).collect();
        Person {
            pid,
            first,
            last,
            emails,
            phones,
            cookies,
        }
    }

    /// Picks the main identifier with probability `main`, else another one.
    fn pick_other(&mut self, n: usize, main: f64) -> usize {
        if n <= 1 || self.rng.chance(main) {
            0
        } else {
            1 + self.rng.index(n - 1)
        }
    }

    fn known(&mut self, pid: u64, hh: &Household, leader: bool) {
        let p = self.person(pid, hh, leader);
        let btyd = self.purchases(&p, hh);
        self.web(&p, hh);
        let subs = self.email(&p);
        self.consent(&p, &subs);
        if self.rng.chance(self.cfg.crm_rate) {
            self.crm(&p, hh);
        }
        self.truth_person(&p, Some(hh), &btyd);
    }

    fn anonymous(&mut self, pid: u64) {
        let cookie = self.cookie(pid * 8);
        let sessions = 1 + self.rng.poisson(self.d.anon_extra_sessions);
        for _ in 0..sessions {
            let t0 = self.uniform_time(self.d.start, self.d.end);
            self.session(pid, cookie, t0, None);
        }
        let p = Person {
            pid,
            first: &MALE[0],
            last: "",
            emails: Vec::new(),
            phones: Vec::new(),
            cookies: vec![cookie],
        };
        self.truth_person(&p, None, &BtydTruth::default());
    }

    // ----- web -------------------------------------------------------------

    fn url(&mut self, event: &str, sku: &mut u64) {
        let s = &mut self.s5;
        s.clear();
        s.push_str(SITE);
        match event {
            "product_view" => {
                let u = self.rng.f64();
                *sku = 100_000 + (u * u * u * 20_000.0) as u64;
                s.push_str("/p/");
                let _ = write!(s, "{sku}");
            }
            "add_to_cart" => {
                let _ = write!(s, "/cart/add?sku={sku}");
            }
            "login" => s.push_str("/account/login"),
            "signup" => s.push_str("/account/signup"),
            _ => match self.rng.below(10) {
                0..=2 => s.push('/'),
                3..=7 => {
                    s.push_str("/c/");
                    s.push_str(self.rng.pick(WEB_CATEGORIES));
                }
                8 => {
                    s.push_str("/search?q=");
                    s.push_str(self.rng.pick(SEARCH_TERMS));
                }
                _ => s.push_str("/stores"),
            },
        }
    }

    fn web_row(
        &mut self,
        pid: u64,
        cookie: &str,
        user: Option<u32>,
        email: Option<&str>,
        event: &str,
        t: i64,
    ) {
        self.t[WEB]
            .row(pid)
            .text(cookie)
            .reference(user)
            .opt_text(email)
            .text(event)
            .text(&self.s5)
            .ts(t)
            .done();
    }

    /// One browsing session. `login` = (user, canonical e-mail, signup?) if the
    /// person logs in (or signs up) in this session.
    fn session(&mut self, pid: u64, cookie: u64, t0: i64, login: Option<(u32, &str, bool)>) {
        let cookie_s = format!("{cookie:016x}");
        let end = self.d.end;
        let n = 1 + self.rng.poisson(self.cfg.events_per_session - 1.0);
        let mut t = t0;
        let mut sku = 100_000u64;
        let mut user: Option<u32> = None;
        for j in 0..n {
            if t >= end {
                break;
            }
            let event = if j == 0 {
                "page_view"
            } else {
                match self.rng.below(20) {
                    0..=8 => "page_view",
                    9..=16 => "product_view",
                    _ => "add_to_cart",
                }
            };
            self.url(event, &mut sku);
            self.web_row(pid, &cookie_s, user, None, event, t);
            t += 5 + self.rng.exp(40.0) as i64;
            if j == 0 {
                if let Some((uid, email, signup)) = login {
                    if t >= end {
                        break;
                    }
                    let event = if signup { "signup" } else { "login" };
                    self.url(event, &mut sku);
                    email_text(&mut self.rng, &self.cfg.noise, email, &mut self.s1);
                    let email_s = std::mem::take(&mut self.s1);
                    self.web_row(pid, &cookie_s, Some(uid), Some(&email_s), event, t);
                    self.s1 = email_s;
                    user = Some(uid);
                    t += 5 + self.rng.exp(20.0) as i64;
                }
            }
        }
    }

    fn web(&mut self, p: &Person, hh: &Household) {
        let cfg = self.cfg;
        let d = self.d;
        // Site account.
        let account = if !p.emails.is_empty() && self.rng.chance(cfg.account_rate) {
            let uid = self.users;
            self.users += 1;
            let created = if self.rng.chance(cfg.pre_window_rate) {
                self.uniform_time(d.history_start, d.start)
            } else {
                self.uniform_time(d.start, d.end)
            };
            Some((uid, created))
        } else {
            None
        };
        let heterogeneity = self.rng.gamma(2.0, 0.5);
        let sessions = self.rng.poisson(d.sessions_per_person * heterogeneity);
        let device_weights = [0.55, 0.25, 0.12, 0.08];
        for _ in 0..sessions {
            let t0 = self.uniform_time(d.start, d.end);
            let cookie = match hh.shared_cookie {
                Some(c) if self.rng.chance(cfg.shared_device_use) => c,
                _ => p.cookies[self.rng.weighted(&device_weights[..p.cookies.len()])],
            };
            let login = match account {
                Some((uid, created)) if created < t0 && self.rng.chance(cfg.login_rate) => {
                    Some((uid, false))
                }
                _ => None,
            };
            self.session(
                p.pid,
                cookie,
                t0,
                login.map(|(u, s)| (u, p.emails[0].as_str(), s)),
            );
        }
        if let Some((uid, created)) = account {
            if created >= d.start {
                let cookie = p.cookies[0];
                self.session(
                    p.pid,
                    cookie,
                    created,
                    Some((uid, p.emails[0].as_str(), true)),
                );
            }
        }
    }

    // ----- e-mail ----------------------------------------------------------

    fn email(&mut self, p: &Person) -> Vec<Subscription> {
        let cfg = self.cfg;
        let d = self.d;
        let mut subs = Vec::new();
        if p.emails.is_empty() || !self.rng.chance(cfg.subscriber_rate) {
            return subs;
        }
        for k in 0..p.emails.len() {
            if k > 0 && !self.rng.chance(cfg.extra_subscription_rate) {
                continue;
            }
            let subscribed_at = if self.rng.chance(cfg.pre_window_rate) {
                self.uniform_time(d.history_start, d.start)
            } else {
                self.uniform_time(d.start, d.end)
            };
            let unsubscribed_at = if self.rng.chance(cfg.unsubscribe_rate) {
                Some(self.uniform_time(subscribed_at.max(d.start) + 1, d.end))
            } else {
                None
            };
            let valid = email_text(&mut self.rng, &cfg.noise, &p.emails[k], &mut self.s1);
            self.t[SUBSCRIBERS]
                .row(p.pid)
                .row_id()
                .text(&self.s1)
                .ts(subscribed_at)
                .text(if unsubscribed_at.is_some() {
                    "unsubscribed"
                } else {
                    "subscribed"
                })
                .ts(unsubscribed_at.unwrap_or(NULL_TS))
                .done();
            subs.push(Subscription {
                email_index: k,
                subscribed_at,
                unsubscribed_at,
            });
            if !valid {
                continue;
            }
            // Opens and clicks: each campaign sent while subscribed is opened
            // with the subscription's own probability.
            let m = d.open_prob_mean;
            if m <= 0.0 {
                continue;
            }
            let a = 0.8;
            let q = self.rng.beta(a, a * (1.0 - m) / m).min(0.999);
            if q <= 0.0 {
                continue;
            }
            let lq = (1.0 - q).ln();
            let from = subscribed_at.max(d.start);
            let to = unsubscribed_at.unwrap_or(d.end).min(d.end);
            let send = |c: i64| d.start + c * d.campaign_interval + 10 * 3600;
            let mut c = ((from - d.start - 10 * 3600).max(0) + d.campaign_interval - 1)
                / d.campaign_interval
                - 1;
            loop {
                // Geometric skip to the next opened campaign.
                let skip = (self.rng.f64_open0().ln() / lq).floor();
                if skip.is_nan() || skip >= 1e9 {
                    break;
                }
                c += 1 + skip as i64;
                if c >= d.campaigns || send(c) >= to {
                    break;
                }
                let opened = send(c) + 60 + self.rng.exp(6.0 * 3600.0) as i64;
                if opened >= d.end {
                    continue;
                }
                let _ = write!(self.s2.clear_and(), "CMP{:04}", c + 1);
                self.t[EMAIL_EVENTS]
                    .row(p.pid)
                    .text(&self.s1)
                    .text("open")
                    .text(&self.s2)
                    .ts(opened)
                    .done();
                if self.rng.chance(cfg.click_rate) {
                    let clicked = opened + 5 + self.rng.exp(120.0) as i64;
                    if clicked < d.end {
                        self.t[EMAIL_EVENTS]
                            .row(p.pid)
                            .text(&self.s1)
                            .text("click")
                            .text(&self.s2)
                            .ts(clicked)
                            .done();
                    }
                }
            }
        }
        subs
    }

    // ----- consent ---------------------------------------------------------

    fn consent_row(&mut self, pid: u64, email: &str, purpose: usize, granted: bool, t: i64) {
        email_text(&mut self.rng, &self.cfg.noise, email, &mut self.s1);
        self.t[CONSENT]
            .row(pid)
            .text(&self.s1)
            .text(PURPOSES[purpose])
            .boolean(granted)
            .ts(t)
            .done();
    }

    fn consent(&mut self, p: &Person, subs: &[Subscription]) {
        let cfg = self.cfg;
        let d = self.d;
        if p.emails.is_empty() {
            return;
        }
        let main_sub = subs.iter().find(|s| s.email_index == 0);
        let t0 = match main_sub {
            Some(s) => s.subscribed_at,
            None => self.uniform_time(d.start, d.end),
        };
        let email = p.emails[0].as_str();
        for purpose in 0..PURPOSES.len() {
            let granted = if purpose == 0 && main_sub.is_some() {
                true
            } else {
                self.rng.chance(cfg.consent_grant_rates[purpose])
            };
            self.consent_row(p.pid, email, purpose, granted, t0);
            if !granted {
                continue;
            }
            let forced = if purpose == 0 {
                main_sub.and_then(|s| s.unsubscribed_at)
            } else {
                None
            };
            let withdrawn = match forced {
                Some(t) => Some(t),
                None if self.rng.chance(cfg.consent_withdraw_rate) => {
                    Some(self.uniform_time(t0.max(d.start) + 1, d.end))
                }
                None => None,
            };
            if let Some(tw) = withdrawn {
                self.consent_row(p.pid, email, purpose, false, tw);
                if forced.is_none() && self.rng.chance(cfg.consent_regrant_rate) {
                    let tr = self.uniform_time(tw + 1, d.end);
                    if tr > tw {
                        self.consent_row(p.pid, email, purpose, true, tr);
                    }
                }
            }
        }
    }

    // ----- CRM -------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn crm_row(
        &mut self,
        dup: bool,
        p: &Person,
        hh: &Household,
        email: Option<usize>,
        phone: Option<usize>,
        nickname: bool,
    ) {
        let cfg = self.cfg;
        let d = self.d;
        let noise = &cfg.noise;
        if nickname && !p.first.nicknames.is_empty() {
            let nick = self.rng.pick(p.first.nicknames);
            name_text(&mut self.rng, noise, nick, &mut self.s1);
        } else {
            first_name_text(&mut self.rng, noise, p.first, &mut self.s1);
        }
        name_text(&mut self.rng, noise, p.last, &mut self.s2);
        let has_email = match email {
            Some(k) => {
                email_text(&mut self.rng, noise, &p.emails[k], &mut self.s3);
                true
            }
            None => false,
        };
        let has_phone = match phone {
            Some(k) => {
                phone_text(&mut self.rng, noise, p.phones[k], &mut self.s4);
                true
            }
            None => false,
        };
        let has_address = self.rng.chance(0.92);
        if has_address {
            let s = &mut self.s5;
            s.clear();
            let _ = write!(s, "{} {} ", hh.street_no, STREET_NAMES[hh.street]);
            let (full, abbr) = STREET_SUFFIXES[hh.suffix];
            if self.rng.chance(noise.street_abbreviation_rate) {
                s.push_str(abbr);
                if abbr != full && self.rng.chance(0.3) {
                    s.push('.');
                }
            } else {
                s.push_str(full);
            }
            if let Some(apt) = hh.apt {
                let _ = write!(
                    s,
                    "{}{apt}",
                    if self.rng.chance(0.5) { " Apt " } else { " #" }
                );
            }
        }
        let created = if dup {
            self.uniform_time(d.start, d.end)
        } else {
            self.uniform_time(d.history_start, d.end)
        };
        let updated = self.uniform_time(created.max(d.start), d.end);
        let city = &CITIES[hh.city];
        let mut zip = String::with_capacity(5);
        let _ = write!(zip, "{:05}", hh.zip);
        let table = if dup {
            &mut self.crm_dups
        } else {
            &mut self.t[CRM]
        };
        table
            .row(p.pid)
            .row_id()
            .text(&self.s1)
            .text(&self.s2)
            .opt_text(has_email.then_some(self.s3.as_str()))
            .opt_text(has_phone.then_some(self.s4.as_str()))
            .opt_text(has_address.then_some(self.s5.as_str()))
            .opt_text(has_address.then_some(city.city))
            .opt_text(has_address.then_some(city.state))
            .opt_text(has_address.then_some(zip.as_str()))
            .ts(created)
            .ts(updated)
            .done();
    }

    fn crm(&mut self, p: &Person, hh: &Household) {
        let email = if p.emails.is_empty() || self.rng.chance(0.05) {
            None
        } else {
            Some(self.pick_other(p.emails.len(), 0.85))
        };
        let phone = if p.phones.is_empty() || self.rng.chance(0.15) {
            None
        } else {
            Some(self.pick_other(p.phones.len(), 0.85))
        };
        self.crm_row(false, p, hh, email, phone, false);
        if self.rng.chance(self.cfg.crm_duplicate_rate) {
            // A duplicate record with a different e-mail, else a different
            // phone, else the same e-mail under a nickname without phone.
            if p.emails.len() >= 2 {
                let other =
                    (email.unwrap_or(0) + 1 + self.rng.index(p.emails.len() - 1)) % p.emails.len();
                self.crm_row(true, p, hh, Some(other), phone, false);
            } else if p.phones.len() >= 2 {
                let other =
                    (phone.unwrap_or(0) + 1 + self.rng.index(p.phones.len() - 1)) % p.phones.len();
                self.crm_row(true, p, hh, email, Some(other), false);
            } else {
                let e = if p.emails.is_empty() { None } else { Some(0) };
                self.crm_row(true, p, hh, e, None, true);
            }
        }
    }

    // ----- purchases -------------------------------------------------------

    fn purchases(&mut self, p: &Person, hh: &Household) -> BtydTruth {
        let cfg = self.cfg;
        let d = self.d;
        let b = &cfg.btyd;
        if !self.rng.chance(cfg.store_customer_rate) {
            return BtydTruth::default();
        }
        let rate = self.rng.gamma(b.rate_shape, 1.0 / b.rate_rate);
        let dropout = self.rng.beta(b.dropout_a, b.dropout_b);
        let nu = self.rng.gamma(b.spend_q, 1.0 / b.spend_gamma).max(1e-9);
        let mean_amount = b.spend_p / nu;
        // BG/NBD: purchases at Poisson(rate) while alive; after each purchase
        // the customer drops out with probability `dropout`. The first
        // purchase is the customer's acquisition.
        let birth = self.uniform_time(d.history_start, d.end);
        let mut times: Vec<i64> = Vec::new();
        let mut amounts: Vec<i64> = Vec::new();
        let mut t = birth as f64;
        let mut alive = true;
        loop {
            times.push(t as i64);
            let dollars = self.rng.gamma(b.spend_p, 1.0 / nu);
            amounts.push(((dollars * 100.0).round() as i64).clamp(1, 100_000_000));
            if self.rng.chance(dropout) {
                alive = false;
                break;
            }
            if rate <= 0.0 {
                break;
            }
            t += self.rng.exp(DAY as f64 / rate);
            if t >= d.end as f64 || times.len() >= MAX_PURCHASES {
                break;
            }
        }
        // Loyalty membership: joins at the first purchase.
        let member = if self.rng.chance(cfg.loyalty_rate) {
            let local = self.t[LOYALTY].len() as u32;
            let lifetime: i64 = amounts.iter().sum::<i64>() / 100;
            let tier = match lifetime {
                x if x < 500 => "bronze",
                x if x < 1500 => "silver",
                x if x < 4000 => "gold",
                _ => "platinum",
            };
            let redeemed = (lifetime as f64 * self.rng.f64() * 0.6 / 100.0).floor() as i64 * 100;
            let points = lifetime - redeemed;
            let joined = birth;
            let updated = times
                .last()
                .copied()
                .unwrap_or(birth)
                .max(joined)
                .min(d.end - 1);
            let noise = &cfg.noise;
            let email = if !p.emails.is_empty() && self.rng.chance(0.9) {
                let k = self.pick_other(p.emails.len(), 0.8);
                email_text(&mut self.rng, noise, &p.emails[k], &mut self.s3);
                true
            } else {
                false
            };
            let phone = if !p.phones.is_empty() {
                let k = self.pick_other(p.phones.len(), 0.85);
                phone_text(&mut self.rng, noise, p.phones[k], &mut self.s4);
                true
            } else {
                false
            };
            first_name_text(&mut self.rng, noise, p.first, &mut self.s1);
            name_text(&mut self.rng, noise, p.last, &mut self.s2);
            self.t[LOYALTY]
                .row(p.pid)
                .row_id()
                .opt_text(email.then_some(self.s3.as_str()))
                .opt_text(phone.then_some(self.s4.as_str()))
                .text(&self.s1)
                .text(&self.s2)
                .text(tier)
                .int(points)
                .ts(joined)
                .ts(updated)
                .done();
            Some((local, joined))
        } else {
            None
        };
        let mut orders = 0u64;
        let mut spend = 0i64;
        for (&t, &cents) in times.iter().zip(&amounts) {
            if t < d.start || t >= d.end {
                continue;
            }
            let day = t.div_euclid(DAY) * DAY;
            let ts = (day + 9 * 3600 + self.rng.below(12 * 3600) as i64).clamp(d.start, d.end - 1);
            let store = if self.rng.chance(0.8) {
                hh.home_store
            } else {
                self.rng.below(u64::from(cfg.store_count)) as u32
            };
            let mut loyalty = None;
            let mut phone: Option<u64> = None;
            if !self.rng.chance(cfg.guest_checkout_rate) {
                match member {
                    Some((local, joined))
                        if ts >= joined && self.rng.chance(cfg.loyalty_id_usage) =>
                    {
                        loyalty = Some(local);
                        if !p.phones.is_empty() && self.rng.chance(0.1) {
                            phone = Some(p.phones[0]);
                        }
                    }
                    _ => {
                        if self.rng.chance(cfg.store_phone_rate) {
                            phone = Some(d.store_phones[store as usize % d.store_phones.len()]);
                        } else if !p.phones.is_empty() {
                            let k = self.pick_other(p.phones.len(), 0.8);
                            phone = Some(p.phones[k]);
                        }
                    }
                }
            }
            let has_phone = match phone {
                Some(n) => {
                    phone_text(&mut self.rng, &cfg.noise, n, &mut self.s4);
                    true
                }
                None => false,
            };
            let _ = write!(self.s2.clear_and(), "ST{:03}", store + 1);
            self.t[POS]
                .row(p.pid)
                .row_id()
                .reference(loyalty)
                .opt_text(has_phone.then_some(self.s4.as_str()))
                .text(&self.s2)
                .int(cents)
                .ts(ts)
                .done();
            orders += 1;
            spend += cents;
        }
        BtydTruth {
            customer: true,
            rate,
            dropout,
            alive,
            first_purchase_at: birth,
            mean_amount,
            orders,
            spend_cents: spend,
        }
    }

    // ----- truth -----------------------------------------------------------

    fn truth_person(&mut self, p: &Person, hh: Option<&Household>, b: &BtydTruth) {
        let o = &mut self.people_csv;
        push_u64(o, p.pid);
        o.extend_from_slice(if hh.is_some() {
            b",known,"
        } else {
            b",anonymous,"
        });
        if let Some(hh) = hh {
            push_u64(o, hh.id);
            o.push(b',');
            o.extend_from_slice(p.first.name.as_bytes());
            o.push(b',');
            o.extend_from_slice(p.last.as_bytes());
        } else {
            o.extend_from_slice(b",,");
        }
        o.push(b',');
        for (i, e) in p.emails.iter().enumerate() {
            if i > 0 {
                o.push(b';');
            }
            o.extend_from_slice(e.as_bytes());
        }
        o.push(b',');
        for (i, &ph) in p.phones.iter().enumerate() {
            if i > 0 {
                o.push(b';');
            }
            let mut s = String::new();
            format_phone(ph, 5, &mut s);
            o.extend_from_slice(s.as_bytes());
        }
        o.push(b',');
        for (i, c) in p.cookies.iter().enumerate() {
            if i > 0 {
                o.push(b';');
            }
            let _ = std::io::Write::write_fmt(o, format_args!("{c:016x}"));
        }
        o.push(b',');
        if let Some(c) = hh.and_then(|h| h.shared_cookie) {
            let _ = std::io::Write::write_fmt(o, format_args!("{c:016x}"));
        }
        o.push(b',');
        if b.customer {
            let _ = std::io::Write::write_fmt(
                o,
                format_args!(
                    "true,{:.6},{:.6},{},",
                    b.rate,
                    b.dropout,
                    if b.alive { "true" } else { "false" }
                ),
            );
            push_timestamp(o, b.first_purchase_at);
            let _ =
                std::io::Write::write_fmt(o, format_args!(",{:.2},{},", b.mean_amount, b.orders));
            push_cents(o, b.spend_cents);
        } else {
            o.extend_from_slice(b"false,,,,,,0,0.00");
        }
        o.push(b'\n');
    }
}

/// Header of `truth_people.csv`.
pub(crate) const PEOPLE_HEADER: &str =
    "person_id,kind,household_id,first_name,last_name,emails,phones,cookies,\
shared_cookie,customer,rate,dropout,alive,first_purchase_at,mean_amount,orders,spend\n";

#[derive(Default)]
struct BtydTruth {
    customer: bool,
    rate: f64,
    dropout: f64,
    alive: bool,
    first_purchase_at: i64,
    mean_amount: f64,
    orders: u64,
    spend_cents: i64,
}

trait ClearAnd {
    fn clear_and(&mut self) -> &mut Self;
}

impl ClearAnd for String {
    fn clear_and(&mut self) -> &mut String {
        self.clear();
        self
    }
}
