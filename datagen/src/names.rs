//! Static vocabularies: names, nicknames, e-mail domains, streets, cities and
//! telephone numbering.

/// A first name with its common nicknames (possibly none).
pub(crate) struct FirstName {
    pub name: &'static str,
    pub nicknames: &'static [&'static str],
}

const fn n(name: &'static str, nicknames: &'static [&'static str]) -> FirstName {
    FirstName { name, nicknames }
}

pub(crate) const FEMALE: &[FirstName] = &[
    n("Mary", &["Molly"]),
    n("Patricia", &["Pat", "Patty", "Trish"]),
    n("Jennifer", &["Jen", "Jenny"]),
    n("Linda", &[]),
    n("Elizabeth", &["Liz", "Beth", "Lizzie", "Betsy"]),
    n("Barbara", &["Barb"]),
    n("Susan", &["Sue", "Susie"]),
    n("Jessica", &["Jess"]),
    n("Sarah", &[]),
    n("Karen", &[]),
    n("Lisa", &[]),
    n("Nancy", &[]),
    n("Margaret", &["Maggie", "Peggy", "Meg"]),
    n("Sandra", &["Sandy"]),
    n("Ashley", &[]),
    n("Kimberly", &["Kim"]),
    n("Emily", &["Em"]),
    n("Donna", &[]),
    n("Michelle", &["Shelly"]),
    n("Carol", &[]),
    n("Amanda", &["Mandy"]),
    n("Dorothy", &["Dot", "Dottie"]),
    n("Melissa", &["Missy", "Mel"]),
    n("Deborah", &["Deb", "Debbie"]),
    n("Stephanie", &["Steph"]),
    n("Rebecca", &["Becky", "Becca"]),
    n("Sharon", &[]),
    n("Laura", &[]),
    n("Cynthia", &["Cindy"]),
    n("Katherine", &["Kate", "Katie", "Kathy"]),
    n("Amy", &[]),
    n("Angela", &["Angie"]),
    n("Anna", &["Annie"]),
    n("Christine", &["Chris", "Chrissy"]),
    n("Samantha", &["Sam"]),
    n("Victoria", &["Vicky", "Tori"]),
    n("Olivia", &["Liv"]),
    n("Sophia", &["Sophie"]),
    n("Isabella", &["Bella", "Izzy"]),
    n("Abigail", &["Abby"]),
    n("Madison", &["Maddie"]),
    n("Alexandra", &["Alex", "Lexi"]),
    n("Jacqueline", &["Jackie"]),
    n("Theresa", &["Terry", "Tess"]),
    n("Priya", &[]),
    n("Mei", &[]),
    n("Fatima", &[]),
    n("Maria", &[]),
    n("Lucia", &["Lucy"]),
    n("Nicole", &["Nikki"]),
    n("Hannah", &[]),
    n("Grace", &[]),
    n("Chloe", &[]),
    n("Zoe", &[]),
    n("Natalie", &["Nat"]),
    n("Ying", &[]),
    n("Aisha", &[]),
    n("Camila", &["Cami"]),
    n("Valentina", &["Vale"]),
    n("Yuki", &[]),
];

pub(crate) const MALE: &[FirstName] = &[
    n("James", &["Jim", "Jimmy", "Jamie"]),
    n("Robert", &["Bob", "Rob", "Bobby", "Robbie"]),
    n("John", &["Johnny", "Jack"]),
    n("Michael", &["Mike", "Mikey"]),
    n("David", &["Dave", "Davey"]),
    n("William", &["Bill", "Will", "Billy", "Liam"]),
    n("Richard", &["Rick", "Dick", "Rich"]),
    n("Joseph", &["Joe", "Joey"]),
    n("Thomas", &["Tom", "Tommy"]),
    n("Christopher", &["Chris", "Topher"]),
    n("Charles", &["Charlie", "Chuck"]),
    n("Daniel", &["Dan", "Danny"]),
    n("Matthew", &["Matt"]),
    n("Anthony", &["Tony"]),
    n("Mark", &[]),
    n("Donald", &["Don", "Donny"]),
    n("Steven", &["Steve"]),
    n("Andrew", &["Andy", "Drew"]),
    n("Paul", &[]),
    n("Joshua", &["Josh"]),
    n("Kenneth", &["Ken", "Kenny"]),
    n("Kevin", &[]),
    n("Brian", &[]),
    n("George", &[]),
    n("Timothy", &["Tim", "Timmy"]),
    n("Ronald", &["Ron", "Ronnie"]),
    n("Edward", &["Ed", "Eddie", "Ted"]),
    n("Jason", &[]),
    n("Jeffrey", &["Jeff"]),
    n("Ryan", &[]),
    n("Jacob", &["Jake"]),
    n("Gary", &[]),
    n("Nicholas", &["Nick", "Nicky"]),
    n("Eric", &[]),
    n("Jonathan", &["Jon"]),
    n("Stephen", &["Steve"]),
    n("Lawrence", &["Larry"]),
    n("Benjamin", &["Ben", "Benny"]),
    n("Samuel", &["Sam", "Sammy"]),
    n("Alexander", &["Alex", "Xander"]),
    n("Patrick", &["Pat"]),
    n("Frank", &[]),
    n("Raymond", &["Ray"]),
    n("Gregory", &["Greg"]),
    n("Peter", &["Pete"]),
    n("Henry", &["Hank", "Harry"]),
    n("Zachary", &["Zach"]),
    n("Wei", &[]),
    n("Raj", &[]),
    n("Carlos", &[]),
    n("Luis", &[]),
    n("Jose", &["Pepe"]),
    n("Mohammed", &["Mo"]),
    n("Hiroshi", &[]),
    n("Ahmed", &[]),
    n("Diego", &[]),
    n("Noah", &[]),
    n("Ethan", &[]),
    n("Lucas", &["Luke"]),
    n("Oliver", &["Ollie"]),
];

pub(crate) const LAST: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
    "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker",
    "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy",
    "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey",
    "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross",
    "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell",
    "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez",
    "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham",
    "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant",
    "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray",
    "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez", "McDonald",
    "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman",
    "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter",
    "Hunter", "Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon",
    "Munoz", "Hunt", "Hicks", "Holmes", "Palmer", "Wagner", "Black", "Robertson",
    "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills", "Meyer", "Rice",
    "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto", "Weaver",
    "Ryan", "Gardner", "Payne", "Grant", "Dunn", "Kelley", "Spencer", "Hawkins",
    "Wang", "Li", "Zhang", "Liu", "Singh", "Kumar", "Shah", "Tanaka", "Sato", "Park",
    "Choi", "Nakamura", "O'Brien", "O'Connor", "Schneider", "Muller", "Rossi", "Novak",
];

/// E-mail domains with relative weights.
pub(crate) const EMAIL_DOMAINS: &[(&str, f64)] = &[
    ("gmail.com", 36.0),
    ("yahoo.com", 11.0),
    ("hotmail.com", 7.0),
    ("outlook.com", 7.0),
    ("icloud.com", 10.0),
    ("aol.com", 3.0),
    ("comcast.net", 3.0),
    ("msn.com", 2.0),
    ("live.com", 2.0),
    ("proton.me", 2.0),
    ("me.com", 2.0),
    ("att.net", 2.0),
    ("verizon.net", 1.0),
    ("example.com", 3.0),
    ("acme-corp.com", 2.0),
    ("globex.com", 2.0),
    ("initech.com", 1.5),
    ("hooli.com", 1.5),
    ("umbrella-inc.com", 1.0),
    ("stark-industries.com", 1.0),
    ("wayne-enterprises.com", 1.0),
];

/// Junk values found in e-mail fields. `""` is an empty (non-NULL) string.
pub const JUNK_EMAILS: &[&str] = &[
    "test@test.com",
    "none@none.com",
    "noemail@noemail.com",
    "n/a",
    "undefined",
    "",
];

/// Junk values found in phone fields. `""` is an empty (non-NULL) string.
pub const JUNK_PHONES: &[&str] = &["0000000000", "1234567890", "9999999999", "n/a", "undefined", ""];

pub(crate) const STREET_NAMES: &[&str] = &[
    "Oak", "Maple", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Main",
    "Sunset", "Highland", "Lincoln", "Jackson", "Church", "Willow", "Meadow", "Forest",
    "River", "Spring", "Ridge", "Valley", "Mill", "Center", "Franklin", "Madison",
    "Jefferson", "Adams", "Union", "Chestnut", "Walnut", "Cherry", "Birch", "Aspen",
    "Magnolia", "Dogwood", "Hickory", "Sycamore", "Laurel", "Vine", "Broad", "Market",
    "Front", "Water", "Bridge", "Harbor", "Mission", "Valencia", "Alameda", "Bayview",
];

/// Street suffixes: (full form, abbreviation).
pub(crate) const STREET_SUFFIXES: &[(&str, &str)] = &[
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Drive", "Dr"),
    ("Lane", "Ln"),
    ("Boulevard", "Blvd"),
    ("Court", "Ct"),
    ("Place", "Pl"),
    ("Way", "Way"),
    ("Terrace", "Ter"),
];

/// A metro area: city, state and the first three digits of its ZIP codes.
pub(crate) struct City {
    pub city: &'static str,
    pub state: &'static str,
    pub zip3: u16,
    pub weight: f64,
}

const fn c(city: &'static str, state: &'static str, zip3: u16, weight: f64) -> City {
    City { city, state, zip3, weight }
}

pub(crate) const CITIES: &[City] = &[
    c("New York", "NY", 100, 10.0),
    c("Brooklyn", "NY", 112, 6.0),
    c("Los Angeles", "CA", 900, 9.0),
    c("San Francisco", "CA", 941, 4.0),
    c("Palo Alto", "CA", 943, 1.5),
    c("San Jose", "CA", 951, 3.0),
    c("San Diego", "CA", 921, 3.5),
    c("Chicago", "IL", 606, 6.0),
    c("Houston", "TX", 770, 5.0),
    c("Dallas", "TX", 752, 4.0),
    c("Austin", "TX", 787, 3.0),
    c("Phoenix", "AZ", 850, 4.0),
    c("Philadelphia", "PA", 191, 4.0),
    c("Boston", "MA", 21, 3.5),
    c("Seattle", "WA", 981, 3.5),
    c("Portland", "OR", 972, 2.5),
    c("Denver", "CO", 802, 3.0),
    c("Las Vegas", "NV", 891, 2.5),
    c("Atlanta", "GA", 303, 3.5),
    c("Miami", "FL", 331, 3.5),
    c("Orlando", "FL", 328, 2.0),
    c("Minneapolis", "MN", 554, 2.0),
    c("Washington", "DC", 200, 2.5),
    c("Nashville", "TN", 372, 2.0),
    c("Charlotte", "NC", 282, 2.0),
];

/// US area codes used for generated phone numbers: long-established
/// geographic codes that phone-number validators accept.
pub(crate) const AREA_CODES: &[u16] = &[
    201, 202, 203, 206, 212, 213, 214, 215, 216, 303, 305, 310, 312, 313, 404, 407,
    408, 410, 412, 415, 503, 504, 512, 602, 612, 614, 615, 617, 619, 646, 650, 702,
    703, 704, 713, 718, 720, 804, 813, 818, 858, 916, 917, 919, 949, 971,
];

/// Whether `nxx` may be used as a central-office (exchange) code: 200-999,
/// excluding N11 service codes and a few special-purpose codes (555, 950,
/// 958, 959, 976).
pub(crate) const fn valid_exchange(nxx: u16) -> bool {
    nxx >= 200 && nxx <= 999 && nxx % 100 != 11 && !matches!(nxx, 555 | 950 | 958 | 959 | 976)
}

pub(crate) const WEB_CATEGORIES: &[&str] = &[
    "womens", "mens", "kids", "home", "beauty", "shoes", "accessories", "outdoor", "electronics", "sale",
];

pub(crate) const SEARCH_TERMS: &[&str] = &[
    "jacket", "sneakers", "dress", "jeans", "lamp", "towels", "backpack", "headphones",
    "sunglasses", "candle", "boots", "t-shirt", "rain+jacket", "gift+card", "coffee+maker",
];
