//! Importing the patrol directory (pure): the rows an admin imports (officer accounts,
//! retailer offers, charities), the rules each row must pass, and reading them from a CSV
//! or JSON file with every refused row named by line and field.
//!
//! An admin runs `peloton admin import officers|offers|charities FILE`. The CLI calls
//! [`parse_import`] on the file (CSV or JSON), shows the refused rows with their line and
//! field, and sends the valid rows to the server; the server re-checks each row with
//! [`validate_officer`], [`validate_offer`] or [`validate_charity`] (it never trusts a
//! client) and merges them into its [`super::directory::Directory`] with
//! [`super::directory::Directory::upsert`]. Both sides use the same rules, so a row the CLI
//! accepted is never refused by the server.
//!
//! Problems are split in two: a file that cannot be read as a table at all (not UTF-8, not
//! a JSON array, a required CSV column missing, too many rows) is an [`ImportError`]; a bad
//! row is a [`RowProblem`] in the [`ImportReport`], so one typo does not sink a file of a
//! hundred thousand rows. The parser streams: memory grows with the valid rows, not with
//! the file's syntax tree.

use crate::ids::validate_id;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// Most data rows one import may hold; a bigger file is refused before it eats the CLI's
/// (or the server's) memory. Split bigger directories over several imports.
pub const MAX_IMPORT_ROWS: u64 = 1_000_000;
/// Longest display name, name, title or retailer, in characters: fits a phone screen line.
pub const MAX_TEXT_CHARS: usize = 120;
/// Dearest offer, in points; bounds typos like an extra zero row after row.
pub const MAX_OFFER_POINTS: u64 = 1_000_000;
/// [`parse_import`] reports progress at least this often, in rows.
pub const PROGRESS_EVERY: u64 = 1_000;
/// Most row problems one report keeps; beyond this only the count grows (see
/// [`ImportReport::omitted_problems`]), so a file of the wrong kind cannot produce
/// millions of messages.
pub const MAX_REPORTED_PROBLEMS: usize = 10_000;

/// A police officer who can go on patrol duty; citizens see the display name and precinct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Officer {
    /// The officer's account id, the same id they log in and appear under in patrol.
    pub id: String,
    /// The name citizens see.
    pub display_name: String,
    /// The precinct the officer belongs to (an id), for grouping and reports.
    pub precinct: String,
    /// Where to mail the officer (duty notices), if they gave an address.
    #[serde(default)]
    pub email: Option<String>,
}

/// Something a retailer gives for reward points; redeeming it issues a voucher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer's id; vouchers carry it.
    pub id: String,
    /// Who honours the voucher, shown to citizens.
    pub retailer: String,
    /// What the citizen gets, shown to citizens.
    pub title: String,
    /// What it costs, in reward points (at least 1, so nothing is free by mistake).
    pub points: u64,
}

/// A charity citizens can donate their points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charity {
    /// The charity's id; donations in the ledger name it.
    pub id: String,
    /// The name citizens see.
    pub name: String,
}

/// Which table an import fills; chosen by the admin on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// Officer accounts ([`Officer`]).
    Officers,
    /// Retailer offers ([`Offer`]).
    Offers,
    /// Charities ([`Charity`]).
    Charities,
}

impl ImportKind {
    /// Every kind, for help texts and tests.
    pub const ALL: [ImportKind; 3] = [
        ImportKind::Officers,
        ImportKind::Offers,
        ImportKind::Charities,
    ];

    /// Reads the kind the admin typed (`officers`, `offers`, `charities`; any case).
    pub fn parse(text: &str) -> Result<ImportKind, ImportError> {
        ImportKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| ImportError::UnknownKind(shorten(text, 40)))
    }

    /// The kind as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Officers => "officers",
            ImportKind::Offers => "offers",
            ImportKind::Charities => "charities",
        }
    }

    /// The columns (CSV) or fields (JSON) a row of this kind must have.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            ImportKind::Officers => Officer::REQUIRED,
            ImportKind::Offers => Offer::REQUIRED,
            ImportKind::Charities => Charity::REQUIRED,
        }
    }
}

impl fmt::Display for ImportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImportKind {
    type Err = ImportError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ImportKind::parse(text)
    }
}

/// How an import file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// Comma-separated, a header row naming the fields (spreadsheet exports).
    Csv,
    /// A JSON array of objects (exports from other systems).
    Json,
}

impl ImportFormat {
    /// Reads the format the admin typed (`csv` or `json`, any case).
    pub fn parse(text: &str) -> Result<ImportFormat, ImportError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(ImportFormat::Csv),
            "json" => Ok(ImportFormat::Json),
            _ => Err(ImportError::UnknownFormat(shorten(text, 40))),
        }
    }

    /// Guesses from the content: JSON imports are arrays, so `[` first means JSON.
    pub fn detect(text: &str) -> ImportFormat {
        match text.trim_start().chars().next() {
            Some('[') => ImportFormat::Json,
            _ => ImportFormat::Csv,
        }
    }

    /// The format's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Csv => "csv",
            ImportFormat::Json => "json",
        }
    }
}

/// The valid rows of one import, all of one kind; what the CLI sends and the server upserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportRows {
    /// Officer accounts.
    Officers(Vec<Officer>),
    /// Retailer offers.
    Offers(Vec<Offer>),
    /// Charities.
    Charities(Vec<Charity>),
}

impl ImportRows {
    /// No rows of `kind`.
    pub fn empty(kind: ImportKind) -> ImportRows {
        match kind {
            ImportKind::Officers => ImportRows::Officers(Vec::new()),
            ImportKind::Offers => ImportRows::Offers(Vec::new()),
            ImportKind::Charities => ImportRows::Charities(Vec::new()),
        }
    }

    /// Which kind these rows are.
    pub fn kind(&self) -> ImportKind {
        match self {
            ImportRows::Officers(_) => ImportKind::Officers,
            ImportRows::Offers(_) => ImportKind::Offers,
            ImportRows::Charities(_) => ImportKind::Charities,
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            ImportRows::Officers(rows) => rows.len(),
            ImportRows::Offers(rows) => rows.len(),
            ImportRows::Charities(rows) => rows.len(),
        }
    }

    /// Whether there are no rows (nothing to send).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-checks every row (the server's side of the import): the first refused row's
    /// 0-based index in the batch, its field and why.
    pub fn validate(&self) -> Result<(), (usize, String, String)> {
        fn first<R>(
            rows: &[R],
            check: fn(&R) -> Result<(), (String, String)>,
        ) -> Result<(), (usize, String, String)> {
            for (i, row) in rows.iter().enumerate() {
                check(row).map_err(|(field, reason)| (i, field, reason))?;
            }
            Ok(())
        }
        match self {
            ImportRows::Officers(rows) => first(rows, validate_officer),
            ImportRows::Offers(rows) => first(rows, validate_offer),
            ImportRows::Charities(rows) => first(rows, validate_charity),
        }
    }
}

/// One refused row, precise enough for the admin to find and fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowProblem {
    /// Where: CSV, the file line the row starts on (the header is line 1); JSON, the
    /// 1-based index in the array.
    pub line: u64,
    /// Which field is at fault (`row` when the row as a whole is, e.g. not a JSON object).
    pub field: String,
    /// Why, as a sentence that names the field.
    pub reason: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The outcome of reading one import file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The rows that passed every check, in file order.
    pub rows: ImportRows,
    /// Refused rows, in file order; a row with several bad fields has several problems.
    /// At most [`MAX_REPORTED_PROBLEMS`].
    pub problems: Vec<RowProblem>,
    /// Problems found beyond [`MAX_REPORTED_PROBLEMS`], counted but not kept.
    pub omitted_problems: u64,
    /// Data rows read (header excluded), valid or not.
    pub total: u64,
}

impl ImportReport {
    /// How many rows were refused (a row with several problems counts once).
    pub fn refused(&self) -> u64 {
        self.total.saturating_sub(self.rows.len() as u64)
    }
}

/// Why a whole file was refused; each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The kind named on the command line is not one we import.
    #[error("unknown import kind `{0}`: use officers, offers or charities")]
    UnknownKind(String),
    /// The format named on the command line is not one we read.
    #[error("unknown import format `{0}`: use csv or json")]
    UnknownFormat(String),
    /// The file is not UTF-8 text (a spreadsheet saved as another encoding, or binary).
    #[error("the file is not UTF-8 text: invalid bytes at offset {offset} (line {line}); save it as UTF-8")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: u64,
        /// 1-based line of the first invalid byte.
        line: u64,
    },
    /// A JSON import must be one array of objects.
    #[error("a JSON import must be an array of objects, like [{{\"id\": ...}}, ...]")]
    NotJsonArray,
    /// The JSON text is broken (syntax), so rows after the break cannot be found.
    #[error("the JSON is not valid at line {line}, column {column}: {reason}")]
    Json {
        /// 1-based line of the error in the file.
        line: u64,
        /// 1-based column of the error.
        column: u64,
        /// What the JSON parser expected.
        reason: String,
    },
    /// The CSV text is broken, so rows after the break cannot be found.
    #[error("the CSV is not valid at line {line}: {reason}")]
    Csv {
        /// 1-based line of the error in the file.
        line: u64,
        /// What the CSV parser found.
        reason: String,
    },
    /// The CSV header lacks columns every row needs.
    #[error(
        "the CSV header is missing the column(s) {}; {kind} files need {} (the header has: {})",
        missing.join(", "),
        kind.required_fields().join(", "),
        found.join(", ")
    )]
    MissingColumns {
        /// What was imported.
        kind: ImportKind,
        /// The required columns not found in the header.
        missing: Vec<String>,
        /// The header's columns as read (at most 20, each shortened), so a file saved with
        /// `;` or tabs between columns is recognisable at a glance.
        found: Vec<String>,
    },
    /// The CSV header names a column twice, so which value counts would be a guess.
    #[error("the CSV header names the column {0} twice")]
    DuplicateColumn(String),
    /// The file has more rows than one import may hold.
    #[error("the file has more than {max} rows; split it into several imports")]
    TooManyRows {
        /// The limit ([`MAX_IMPORT_ROWS`]).
        max: u64,
    },
}

/// Reads a whole import file. `format` is `csv` or `json`; when `None` it is detected from
/// the first non-space character (`[` means JSON). A UTF-8 byte-order mark is skipped;
/// an empty (or blank) file has zero rows, and CSV rows whose cells are all blank are
/// skipped (spreadsheets export trailing empty rows as `,,,`). `progress` is called with
/// the number of rows read so far at least every [`PROGRESS_EVERY`] rows, and once at the
/// end.
pub fn parse_import(
    kind: ImportKind,
    bytes: &[u8],
    format: Option<&str>,
    progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError> {
    parse_with_limit(kind, bytes, format, MAX_IMPORT_ROWS, progress)
}

fn parse_with_limit(
    kind: ImportKind,
    bytes: &[u8],
    format: Option<&str>,
    max_rows: u64,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError> {
    let format = format.map(ImportFormat::parse).transpose()?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|b| **b == b'\n').count() as u64 + 1;
        ImportError::NotUtf8 {
            offset: offset as u64,
            line,
        }
    })?;
    // Excel and Notepad put a BOM at the start of "UTF-8" files; it is not data.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let format = format.unwrap_or_else(|| ImportFormat::detect(text));
    let progress: &mut dyn FnMut(u64) = &mut progress;
    match kind {
        ImportKind::Officers => {
            run::<Officer>(text, format, max_rows, progress).map(|c| c.finish(ImportRows::Officers))
        }
        ImportKind::Offers => {
            run::<Offer>(text, format, max_rows, progress).map(|c| c.finish(ImportRows::Offers))
        }
        ImportKind::Charities => run::<Charity>(text, format, max_rows, progress)
            .map(|c| c.finish(ImportRows::Charities)),
    }
}

fn run<R: Record>(
    text: &str,
    format: ImportFormat,
    max_rows: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Collector<R>, ImportError> {
    let mut collector = Collector::new(max_rows);
    if !text.trim().is_empty() {
        match format {
            ImportFormat::Csv => read_csv(text, &mut collector, progress)?,
            ImportFormat::Json => read_json(text, &mut collector, progress)?,
        }
    }
    progress(collector.total);
    Ok(collector)
}

/// Checks an officer that arrived already structured: the first bad field and why.
pub fn validate_officer(o: &Officer) -> Result<(), (String, String)> {
    first_problem(|p| o.check(p))
}

/// Checks an offer that arrived already structured: the first bad field and why.
pub fn validate_offer(o: &Offer) -> Result<(), (String, String)> {
    first_problem(|p| o.check(p))
}

/// Checks a charity that arrived already structured: the first bad field and why.
pub fn validate_charity(c: &Charity) -> Result<(), (String, String)> {
    first_problem(|p| c.check(p))
}

fn first_problem(check: impl FnOnce(&mut Problems)) -> Result<(), (String, String)> {
    let mut problems = Problems::default();
    check(&mut problems);
    match problems.list.into_iter().next() {
        None => Ok(()),
        Some((field, reason)) => Err((field.to_owned(), reason)),
    }
}

// ---------------------------------------------------------------------------------------
// Field rules, shared by the parser and the validate_* functions so both always agree.

/// Problems of one row, at most one per field (the first one found is the useful one).
#[derive(Default)]
struct Problems {
    list: Vec<(&'static str, String)>,
}

impl Problems {
    fn add(&mut self, field: &'static str, reason: String) {
        if !self.has(field) {
            self.list.push((field, reason));
        }
    }

    fn has(&self, field: &str) -> bool {
        self.list.iter().any(|(f, _)| *f == field)
    }

    fn check(&mut self, field: &'static str, result: Result<(), String>) {
        if let Err(reason) = result {
            self.add(field, reason);
        }
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), String> {
    validate_id(field, value).map_err(|r| r.message)
}

fn check_text(field: &'static str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is required"));
    }
    if value.trim() != value {
        return Err(format!("{field} must not start or end with spaces"));
    }
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "{field} must be at most {MAX_TEXT_CHARS} characters, got {chars}"
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{field} must not contain control characters, found U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
}

/// The one address check ([`crate::ids::validate_email`]), as a row problem.
fn check_email(field: &'static str, value: &str) -> Result<(), String> {
    crate::ids::validate_email(field, value).map_err(|r| r.message)
}

fn check_points(field: &'static str, value: u64) -> Result<(), String> {
    if !(1..=MAX_OFFER_POINTS).contains(&value) {
        return Err(format!(
            "{field} must be between 1 and {MAX_OFFER_POINTS}, got {value}"
        ));
    }
    Ok(())
}

fn shorten(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Reading rows: one cell abstraction over CSV and JSON, one trait per row type.

/// A field's raw value in one row, before its type is checked.
#[derive(Clone, Copy)]
enum Cell<'a> {
    /// No such column, a short CSV row, a missing JSON field or `null`.
    Absent,
    /// A CSV cell: always text, whatever the field's type.
    Csv(&'a str),
    /// A JSON value other than `null`: its type must match the field's.
    Json(&'a Value),
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A required text field, trimmed; empty on a problem (the problem is recorded).
fn text(cell: Cell<'_>, field: &'static str, problems: &mut Problems) -> String {
    match cell {
        Cell::Csv(s) => s.trim().to_owned(),
        Cell::Json(Value::String(s)) => s.trim().to_owned(),
        Cell::Absent => {
            problems.add(field, format!("{field} is required"));
            String::new()
        }
        Cell::Json(v) => {
            problems.add(field, format!("{field} must be text, got {}", json_type(v)));
            String::new()
        }
    }
}

/// An optional text field, trimmed; blank means absent (an empty spreadsheet cell).
fn optional_text(cell: Cell<'_>, field: &'static str, problems: &mut Problems) -> Option<String> {
    match cell {
        Cell::Csv(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
        Cell::Json(Value::String(s)) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
        Cell::Absent => None,
        Cell::Json(v) => {
            problems.add(field, format!("{field} must be text, got {}", json_type(v)));
            None
        }
    }
}

/// A whole number of points; 0 on a problem (which fails the range check anyway).
fn whole_number(cell: Cell<'_>, field: &'static str, problems: &mut Problems) -> u64 {
    let range = || format!("{field} must be a whole number between 1 and {MAX_OFFER_POINTS}");
    match cell {
        Cell::Absent => problems.add(field, format!("{field} is required")),
        Cell::Csv(s) => {
            let s = s.trim();
            if s.is_empty() {
                problems.add(field, format!("{field} is required"));
            } else if let Ok(n) = s.parse::<u64>() {
                return n;
            } else {
                problems.add(field, format!("{}, got `{}`", range(), shorten(s, 40)));
            }
        }
        Cell::Json(Value::Number(n)) => match n.as_u64() {
            Some(n) => return n,
            None => problems.add(field, format!("{}, got {n}", range())),
        },
        Cell::Json(v) => problems.add(field, format!("{}, got {}", range(), json_type(v))),
    }
    0
}

/// One kind of directory row: its fields, how to read it from cells, and its rules.
trait Record: Sized {
    /// The import kind this row type fills.
    const KIND: ImportKind;
    /// Fields every row must have (CSV columns that must be in the header).
    const REQUIRED: &'static [&'static str];
    /// Fields a row may have.
    const OPTIONAL: &'static [&'static str];
    /// Reads a row; type problems go into `problems`.
    fn read<'a>(cell: &dyn Fn(&str) -> Cell<'a>, problems: &mut Problems) -> Self;
    /// The rules; a field that already has a problem is not reported twice.
    fn check(&self, problems: &mut Problems);
    fn id(&self) -> &str;
}

impl Record for Officer {
    const KIND: ImportKind = ImportKind::Officers;
    const REQUIRED: &'static [&'static str] = &["id", "display_name", "precinct"];
    const OPTIONAL: &'static [&'static str] = &["email"];

    fn read<'a>(cell: &dyn Fn(&str) -> Cell<'a>, problems: &mut Problems) -> Self {
        Officer {
            id: text(cell("id"), "id", problems),
            display_name: text(cell("display_name"), "display_name", problems),
            precinct: text(cell("precinct"), "precinct", problems),
            email: optional_text(cell("email"), "email", problems),
        }
    }

    fn check(&self, problems: &mut Problems) {
        problems.check("id", check_id("id", &self.id));
        problems.check(
            "display_name",
            check_text("display_name", &self.display_name),
        );
        problems.check("precinct", check_id("precinct", &self.precinct));
        if let Some(email) = &self.email {
            problems.check("email", check_email("email", email));
        }
    }

    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for Offer {
    const KIND: ImportKind = ImportKind::Offers;
    const REQUIRED: &'static [&'static str] = &["id", "retailer", "title", "points"];
    const OPTIONAL: &'static [&'static str] = &[];

    fn read<'a>(cell: &dyn Fn(&str) -> Cell<'a>, problems: &mut Problems) -> Self {
        Offer {
            id: text(cell("id"), "id", problems),
            retailer: text(cell("retailer"), "retailer", problems),
            title: text(cell("title"), "title", problems),
            points: whole_number(cell("points"), "points", problems),
        }
    }

    fn check(&self, problems: &mut Problems) {
        problems.check("id", check_id("id", &self.id));
        problems.check("retailer", check_text("retailer", &self.retailer));
        problems.check("title", check_text("title", &self.title));
        problems.check("points", check_points("points", self.points));
    }

    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for Charity {
    const KIND: ImportKind = ImportKind::Charities;
    const REQUIRED: &'static [&'static str] = &["id", "name"];
    const OPTIONAL: &'static [&'static str] = &[];

    fn read<'a>(cell: &dyn Fn(&str) -> Cell<'a>, problems: &mut Problems) -> Self {
        Charity {
            id: text(cell("id"), "id", problems),
            name: text(cell("name"), "name", problems),
        }
    }

    fn check(&self, problems: &mut Problems) {
        problems.check("id", check_id("id", &self.id));
        problems.check("name", check_text("name", &self.name));
    }

    fn id(&self) -> &str {
        &self.id
    }
}

/// Accumulates the rows of one file as they stream past.
struct Collector<R> {
    rows: Vec<R>,
    problems: Vec<RowProblem>,
    omitted_problems: u64,
    total: u64,
    max_rows: u64,
    /// Line each valid id was first seen on, to name it in duplicate reports.
    seen: HashMap<String, u64>,
}

impl<R: Record> Collector<R> {
    fn new(max_rows: u64) -> Self {
        Collector {
            rows: Vec::new(),
            problems: Vec::new(),
            omitted_problems: 0,
            total: 0,
            max_rows,
            seen: HashMap::new(),
        }
    }

    /// Counts a row, refusing the file once it has too many.
    fn count(&mut self) -> Result<(), ImportError> {
        self.total += 1;
        if self.total > self.max_rows {
            return Err(ImportError::TooManyRows { max: self.max_rows });
        }
        Ok(())
    }

    fn row<'a>(&mut self, line: u64, cell: &dyn Fn(&str) -> Cell<'a>) {
        let mut problems = Problems::default();
        let record = R::read(cell, &mut problems);
        record.check(&mut problems);
        // A repeated id is refused even when the earlier row was itself refused: the file
        // says two different things about one id, and only the admin knows which is right.
        if !problems.has("id") {
            match self.seen.get(record.id()) {
                Some(first) => {
                    problems.add("id", format!("duplicate id, first seen on line {first}"))
                }
                None => {
                    self.seen.insert(record.id().to_owned(), line);
                }
            }
        }
        if problems.list.is_empty() {
            self.rows.push(record);
        } else {
            for (field, reason) in problems.list {
                self.problem(line, field, reason);
            }
        }
    }

    fn problem(&mut self, line: u64, field: &str, reason: String) {
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(RowProblem {
                line,
                field: field.to_owned(),
                reason,
            });
        } else {
            self.omitted_problems += 1;
        }
    }

    fn finish(self, wrap: fn(Vec<R>) -> ImportRows) -> ImportReport {
        ImportReport {
            rows: wrap(self.rows),
            problems: self.problems,
            omitted_problems: self.omitted_problems,
            total: self.total,
        }
    }
}

fn read_csv<R: Record>(
    text: &str,
    collector: &mut Collector<R>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ImportError> {
    let csv_error = |e: csv::Error| ImportError::Csv {
        line: e.position().map_or(0, |p| p.line()),
        reason: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // Short and long rows are row problems (missing values), not a broken file.
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = reader.headers().map_err(csv_error)?.clone();
    // Column index of each field we know; unknown columns are ignored so admins can keep
    // their own notes next to the data.
    let mut columns: Vec<(&'static str, usize)> = Vec::new();
    for (index, name) in header.iter().enumerate() {
        let name = name.trim();
        let known = R::REQUIRED.iter().chain(R::OPTIONAL).find(|f| **f == name);
        if let Some(&field) = known {
            if columns.iter().any(|(f, _)| *f == field) {
                return Err(ImportError::DuplicateColumn(field.to_owned()));
            }
            columns.push((field, index));
        }
    }
    let missing: Vec<String> = R::REQUIRED
        .iter()
        .filter(|f| !columns.iter().any(|(c, _)| c == *f))
        .map(|f| (*f).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::MissingColumns {
            kind: R::KIND,
            missing,
            found: header.iter().take(20).map(|h| shorten(h, 40)).collect(),
        });
    }
    let mut lines = LineCounter::new(text.as_bytes());
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
        // Spreadsheets export empty rows as `,,,`: they carry nothing to import or report.
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        collector.count()?;
        let line = lines.line_at(record.position().map_or(0, |p| p.byte()));
        let cell = |field: &str| {
            columns
                .iter()
                .find(|(f, _)| *f == field)
                .and_then(|(_, i)| record.get(*i))
                .map_or(Cell::Absent, Cell::Csv)
        };
        collector.row(line, &cell);
        if collector.total % PROGRESS_EVERY == 0 {
            progress(collector.total);
        }
    }
    Ok(())
}

/// Turns a record's byte offset into its file line. The csv crate's own line numbers lag
/// behind after blank lines and CRLF endings (it counts a terminator when it reads the next
/// record), so we count `\n`s ourselves, incrementally since offsets only grow.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    /// The line of the record whose reading began at `byte` (possibly on the previous
    /// record's terminator or on blank lines before it).
    fn line_at(&mut self, byte: u64) -> u64 {
        let len = self.bytes.len();
        let mut start = usize::try_from(byte).unwrap_or(len).min(len);
        while start < len && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start < self.offset {
            // Never happens (records come in order), but counting again is always right.
            self.offset = 0;
            self.line = 1;
        }
        let newlines = self.bytes[self.offset..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        self.line += newlines as u64;
        self.offset = start;
        self.line
    }
}

fn read_json<R: Record>(
    text: &str,
    collector: &mut Collector<R>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ImportError> {
    if !text.trim_start().starts_with('[') {
        return Err(ImportError::NotJsonArray);
    }
    let mut visitor = RowsVisitor {
        collector,
        progress,
        stopped: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let json_error = |e: serde_json::Error| ImportError::Json {
        line: e.line() as u64,
        column: e.column() as u64,
        reason: e.to_string(),
    };
    if let Err(e) = de::Deserializer::deserialize_seq(&mut de, &mut visitor) {
        return Err(visitor.stopped.take().unwrap_or_else(|| json_error(e)));
    }
    de.end().map_err(json_error)
}

/// Walks the top-level JSON array one element at a time, so a large file is never held
/// as one syntax tree.
struct RowsVisitor<'a, R> {
    collector: &'a mut Collector<R>,
    progress: &'a mut dyn FnMut(u64),
    /// Why the walk stopped early, when it was our decision rather than bad JSON.
    stopped: Option<ImportError>,
}

impl<'de, R: Record> Visitor<'de> for &mut RowsVisitor<'_, R> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            if let Err(e) = self.collector.count() {
                self.stopped = Some(e);
                return Err(de::Error::custom("too many rows"));
            }
            let line = self.collector.total;
            match &value {
                Value::Object(map) => {
                    let cell = |field: &str| match map.get(field) {
                        None | Some(Value::Null) => Cell::Absent,
                        Some(value) => Cell::Json(value),
                    };
                    self.collector.row(line, &cell);
                }
                other => self.collector.problem(
                    line,
                    "row",
                    format!("row must be a JSON object, got {}", json_type(other)),
                ),
            }
            if self.collector.total % PROGRESS_EVERY == 0 {
                (self.progress)(self.collector.total);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(kind: ImportKind, text: &str) -> ImportReport {
        parse_import(kind, text.as_bytes(), None, |_| {}).unwrap()
    }

    fn fields(report: &ImportReport) -> Vec<(u64, &str)> {
        report
            .problems
            .iter()
            .map(|p| (p.line, p.field.as_str()))
            .collect()
    }

    fn officer(id: &str, name: &str, precinct: &str, email: Option<&str>) -> Officer {
        Officer {
            id: id.into(),
            display_name: name.into(),
            precinct: precinct.into(),
            email: email.map(Into::into),
        }
    }

    #[test]
    fn good_officers_csv_and_json() {
        let csv = "id,display_name,precinct,email\n\
                   o-1, Ana Ruiz ,p-north,ana@police.example.org\n\
                   o-2,\"Bo, Jr.\",p-south,\n";
        let report = parse(ImportKind::Officers, csv);
        assert_eq!(report.total, 2);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let expected = vec![
            officer("o-1", "Ana Ruiz", "p-north", Some("ana@police.example.org")),
            officer("o-2", "Bo, Jr.", "p-south", None),
        ];
        assert_eq!(report.rows, ImportRows::Officers(expected.clone()));

        let json = r#"[
            {"id": "o-1", "display_name": "Ana Ruiz", "precinct": "p-north",
             "email": "ana@police.example.org", "rank": "sergeant"},
            {"id": "o-2", "display_name": "Bo, Jr.", "precinct": "p-south", "email": null}
        ]"#;
        let report = parse(ImportKind::Officers, json);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.rows, ImportRows::Officers(expected));
        assert_eq!(report.total, 2);
    }

    #[test]
    fn good_offers_csv_and_json() {
        let csv = "title,points,retailer,id,notes\n\
                   Free coffee,50,Bean There,coffee-1,ignored column\n\
                   Cinema ticket,1000000,Roxy,cinema\n";
        let report = parse(ImportKind::Offers, csv);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let expected = vec![
            Offer {
                id: "coffee-1".into(),
                retailer: "Bean There".into(),
                title: "Free coffee".into(),
                points: 50,
            },
            Offer {
                id: "cinema".into(),
                retailer: "Roxy".into(),
                title: "Cinema ticket".into(),
                points: 1_000_000,
            },
        ];
        assert_eq!(report.rows, ImportRows::Offers(expected.clone()));
        let json = serde_json::to_string(&expected).unwrap();
        let report =
            parse_import(ImportKind::Offers, json.as_bytes(), Some("JSON"), |_| {}).unwrap();
        assert_eq!(report.rows, ImportRows::Offers(expected));
    }

    #[test]
    fn good_charities_csv_and_json() {
        let csv = "id,name\nred-cross,Red Cross\nfood.bank,Food Bank ünd Café\n";
        let report = parse(ImportKind::Charities, csv);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.rows.len(), 2);
        let json = r#"[{"id":"red-cross","name":"Red Cross"},{"id":"food.bank","name":"Food Bank ünd Café"}]"#;
        let from_json = parse(ImportKind::Charities, json);
        assert_eq!(from_json.rows, report.rows);
        assert_eq!(from_json.rows.kind(), ImportKind::Charities);
    }

    #[test]
    fn each_officer_rule_names_line_and_field() {
        let long = "x".repeat(121);
        let csv = format!(
            "id,display_name,precinct,email\n\
             ok-1,Ana,p1,ana@example.org\n\
             bad id,Ana,p1,\n\
             ok-3,,p1,\n\
             ok-4,{long},p1,\n\
             ok-5,Ana\u{7},p1,\n\
             ok-6,Ana,p 1,\n\
             ok-7,Ana,p1,not-an-address\n\
             ok-8,Ana,p1,a@b@example.org\n\
             ok-9,Ana,p1,@example.org\n\
             ok-10,Ana,p1,ana@localhost\n\
             ok-11,Ana,p1,ana@exa mple.org\n\
             ok-12,Ana,p1,{}@example.org\n\
             ok-13,Ana\n\
             ,,,\n\
             ,,,ana@example.org\n",
            "a".repeat(250)
        );
        let report = parse(ImportKind::Officers, &csv);
        assert_eq!(
            fields(&report),
            vec![
                (3, "id"),
                (4, "display_name"),
                (5, "display_name"),
                (6, "display_name"),
                (7, "precinct"),
                (8, "email"),
                (9, "email"),
                (10, "email"),
                (11, "email"),
                (12, "email"),
                (13, "email"),
                (14, "precinct"),
                (16, "id"),
                (16, "display_name"),
                (16, "precinct"),
            ]
        );
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.total, 14, "the blank ,,, row is skipped");
        assert_eq!(report.refused(), 13);
        for p in &report.problems {
            assert!(p.reason.contains(&p.field), "{p:?}");
        }
        assert!(report.problems[2].reason.contains("120"));
        assert_eq!(
            report.problems[0].to_string(),
            format!("line 3: {}", report.problems[0].reason)
        );
    }

    #[test]
    fn each_offer_rule_names_line_and_field() {
        let csv = "id,retailer,title,points\n\
                   a,Shop,Thing,1\n\
                   b,,Thing,1\n\
                   c,Shop,,1\n\
                   d,Shop,Thing,0\n\
                   e,Shop,Thing,1000001\n\
                   f,Shop,Thing,-3\n\
                   g,Shop,Thing,2.5\n\
                   h,Shop,Thing,lots\n\
                   i,Shop,Thing,\n\
                   j,Sh\top,Thing,1\n";
        let report = parse(ImportKind::Offers, csv);
        assert_eq!(
            fields(&report),
            vec![
                (3, "retailer"),
                (4, "title"),
                (5, "points"),
                (6, "points"),
                (7, "points"),
                (8, "points"),
                (9, "points"),
                (10, "points"),
                (11, "retailer"),
            ]
        );
        let json = r#"[
            {"id":"a","retailer":"Shop","title":"Thing","points":1},
            {"id":"b","retailer":"Shop","title":"Thing","points":"5"},
            {"id":"c","retailer":"Shop","title":"Thing","points":-5},
            {"id":"d","retailer":"Shop","title":"Thing","points":2.5},
            {"id":"e","retailer":"Shop","title":"Thing","points":0},
            {"id":"f","retailer":"Shop","title":"Thing"},
            {"id":7,"retailer":"Shop","title":"Thing","points":1},
            {"id":"h","retailer":["Shop"],"title":{},"points":true},
            "not an object",
            {"id":"j","retailer":"Shop","title":"Thing","points":18446744073709551616}
        ]"#;
        let report = parse(ImportKind::Offers, json);
        assert_eq!(
            fields(&report),
            vec![
                (2, "points"),
                (3, "points"),
                (4, "points"),
                (5, "points"),
                (6, "points"),
                (7, "id"),
                (8, "retailer"),
                (8, "title"),
                (8, "points"),
                (9, "row"),
                (10, "points"),
            ]
        );
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.total, 10);
    }

    #[test]
    fn each_charity_rule_names_line_and_field() {
        let json = r#"[{"id":"", "name":"X"}, {"id":"c", "name":"  "}, {"name":"Y"}, {"id":"d"}]"#;
        let report = parse(ImportKind::Charities, json);
        assert_eq!(
            fields(&report),
            vec![(1, "id"), (2, "name"), (3, "id"), (4, "name")]
        );
    }

    #[test]
    fn duplicates_name_the_first_line() {
        let csv = "id,name\na,One\nb,Two\na,Again\nbad id,X\nb,\nb,Three\n";
        let report = parse(ImportKind::Charities, csv);
        assert_eq!(
            report.rows,
            ImportRows::Charities(vec![
                Charity {
                    id: "a".into(),
                    name: "One".into()
                },
                Charity {
                    id: "b".into(),
                    name: "Two".into()
                },
            ])
        );
        assert_eq!(
            fields(&report),
            vec![(4, "id"), (5, "id"), (6, "name"), (6, "id"), (7, "id")]
        );
        assert_eq!(
            report.problems[0].reason,
            "duplicate id, first seen on line 2"
        );
        assert_eq!(
            report.problems[4].reason,
            "duplicate id, first seen on line 3"
        );

        let json = r#"[{"id":"a","name":"One"},{"id":"a","name":"Two"}]"#;
        let report = parse(ImportKind::Charities, json);
        assert_eq!(
            report.problems[0].reason,
            "duplicate id, first seen on line 1"
        );
        assert_eq!(fields(&report), vec![(2, "id")]);
    }

    #[test]
    fn bom_crlf_blank_lines_and_multiline_cells() {
        let csv = "\u{feff}id,name\r\na,One\r\n\r\nb,\"Two\r\nlines\"\r\nc,\r\n";
        let report = parse(ImportKind::Charities, csv);
        assert_eq!(report.rows.len(), 1);
        // The multi-line cell is a control character problem on the line it starts on; the
        // row after it keeps its true file line.
        assert_eq!(fields(&report), vec![(4, "name"), (6, "name")]);
        let json = "\u{feff} [{\"id\":\"a\",\"name\":\"One\"}]";
        assert_eq!(parse(ImportKind::Charities, json).rows.len(), 1);
    }

    #[test]
    fn empty_files_have_zero_rows() {
        for kind in ImportKind::ALL {
            for text in ["", "  \n\r\n", "\u{feff}", "[]", " [ ] \n"] {
                for format in [None, Some("csv"), Some("json")] {
                    if text.contains('[') && format == Some("csv") {
                        continue;
                    }
                    let report = parse_import(kind, text.as_bytes(), format, |_| {}).unwrap();
                    assert_eq!(report.total, 0);
                    assert!(report.rows.is_empty());
                    assert_eq!(report.rows.kind(), kind);
                }
            }
            let header_only = format!("{}\n", kind.required_fields().join(","));
            assert_eq!(parse(kind, &header_only).total, 0);
        }
    }

    #[test]
    fn file_level_errors() {
        let err =
            |kind, bytes: &[u8], format| parse_import(kind, bytes, format, |_| {}).unwrap_err();
        assert_eq!(
            err(ImportKind::Charities, b"id,name\na,\xff\n", None),
            ImportError::NotUtf8 {
                offset: 10,
                line: 2
            }
        );
        assert_eq!(
            err(ImportKind::Charities, b"{\"id\":\"a\"}", Some("json")),
            ImportError::NotJsonArray
        );
        assert!(matches!(
            err(ImportKind::Charities, b"[{\"id\":\"a\"},\n{", None),
            ImportError::Json { line: 2, .. }
        ));
        assert!(matches!(
            err(ImportKind::Charities, b"[] []", None),
            ImportError::Json { .. }
        ));
        let missing = err(ImportKind::Offers, b"id,title,note\na,b,c\n", None);
        assert_eq!(
            missing,
            ImportError::MissingColumns {
                kind: ImportKind::Offers,
                missing: vec!["retailer".into(), "points".into()],
                found: vec!["id".into(), "title".into(), "note".into()],
            }
        );
        let semicolons = err(
            ImportKind::Charities,
            b"id;name
a;A
",
            None,
        );
        assert!(semicolons.to_string().contains("id;name"), "{semicolons}");
        assert!(
            missing.to_string().contains("retailer, points"),
            "{missing}"
        );
        assert_eq!(
            err(ImportKind::Charities, b"id,name,id\n", None),
            ImportError::DuplicateColumn("id".into())
        );
        assert_eq!(
            err(ImportKind::Charities, b"id,name\n", Some("xml")),
            ImportError::UnknownFormat("xml".into())
        );
        // Officers need no email column, but need the rest.
        assert!(parse_import(
            ImportKind::Officers,
            b"id,display_name,precinct\n",
            None,
            |_| {}
        )
        .is_ok());
        assert!(matches!(
            err(ImportKind::Officers, b"id,display_name,email\n", None),
            ImportError::MissingColumns { .. }
        ));
    }

    #[test]
    fn too_many_rows_is_a_file_error() {
        let csv = "id,name\na,A\nb,B\nc,C\n";
        let ok = parse_with_limit(ImportKind::Charities, csv.as_bytes(), None, 3, |_| {});
        assert_eq!(ok.unwrap().total, 3);
        let refused = parse_with_limit(
            ImportKind::Charities,
            b"id,name\na,A\nb,B\nc,C\nd,D\n",
            None,
            3,
            |_| {},
        );
        assert_eq!(refused.unwrap_err(), ImportError::TooManyRows { max: 3 });
        let json = br#"[{"id":"a","name":"A"},{"id":"b","name":"B"}]"#;
        let refused = parse_with_limit(ImportKind::Charities, json, None, 1, |_| {});
        assert_eq!(refused.unwrap_err(), ImportError::TooManyRows { max: 1 });
        assert_eq!(MAX_IMPORT_ROWS, 1_000_000);
    }

    #[test]
    fn progress_is_reported_every_thousand_rows_and_at_the_end() {
        let mut csv = String::from("id,name\n");
        for i in 0..2_500 {
            csv.push_str(&format!("c{i},Charity {i}\n"));
        }
        let mut seen = Vec::new();
        let report = parse_import(ImportKind::Charities, csv.as_bytes(), None, |n| {
            seen.push(n)
        })
        .unwrap();
        assert_eq!(seen, vec![1_000, 2_000, 2_500]);
        assert_eq!(report.rows.len(), 2_500);

        let json: Vec<Charity> = (0..1_000)
            .map(|i| Charity {
                id: format!("c{i}"),
                name: "N".into(),
            })
            .collect();
        let json = serde_json::to_vec(&json).unwrap();
        let mut seen = Vec::new();
        parse_import(ImportKind::Charities, &json, None, |n| seen.push(n)).unwrap();
        assert_eq!(seen, vec![1_000, 1_000]);
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let mut csv = String::from("id,name\n");
        for _ in 0..(MAX_REPORTED_PROBLEMS + 5) {
            csv.push_str("bad id,\n");
        }
        let report = parse(ImportKind::Charities, &csv);
        assert_eq!(report.problems.len(), MAX_REPORTED_PROBLEMS);
        assert_eq!(
            report.omitted_problems,
            2 * (MAX_REPORTED_PROBLEMS as u64 + 5) - MAX_REPORTED_PROBLEMS as u64
        );
        assert_eq!(report.refused(), MAX_REPORTED_PROBLEMS as u64 + 5);
    }

    #[test]
    fn structured_rows_are_revalidated_like_parsed_ones() {
        assert!(validate_officer(&officer("o1", "Ana", "p1", Some("a@b.org"))).is_ok());
        assert!(validate_officer(&officer("o1", "Ana", "p1", None)).is_ok());
        let (field, reason) = validate_officer(&officer("o1", " Ana", "p1", None)).unwrap_err();
        assert_eq!(field, "display_name");
        assert!(reason.contains("spaces"), "{reason}");
        assert_eq!(
            validate_officer(&officer("o1", "Ana", "p1", Some("")))
                .unwrap_err()
                .0,
            "email"
        );
        assert_eq!(
            validate_offer(&Offer {
                id: "x".into(),
                retailer: "R".into(),
                title: "T".into(),
                points: 0
            })
            .unwrap_err()
            .0,
            "points"
        );
        assert_eq!(
            validate_charity(&Charity {
                id: "x/y".into(),
                name: "C".into()
            })
            .unwrap_err()
            .0,
            "id"
        );
        // Whatever the parser accepts, the server accepts.
        let report = parse(
            ImportKind::Officers,
            "id,display_name,precinct,email\no1,  Ana  ,p1,  a@b.org \n",
        );
        assert!(report.problems.is_empty());
        assert_eq!(report.rows.validate(), Ok(()));
        let bad = ImportRows::Officers(vec![
            officer("o1", "Ana", "p1", None),
            officer("o2", "", "p1", None),
        ]);
        assert_eq!(
            bad.validate().unwrap_err(),
            (
                1,
                "display_name".to_owned(),
                "display_name is required".to_owned()
            )
        );
    }

    #[test]
    fn kinds_and_formats_parse() {
        for kind in ImportKind::ALL {
            assert_eq!(ImportKind::parse(kind.as_str()).unwrap(), kind);
            assert_eq!(kind.to_string().parse::<ImportKind>().unwrap(), kind);
        }
        assert_eq!(ImportKind::parse("Offers").unwrap(), ImportKind::Offers);
        assert!(matches!(
            ImportKind::parse("donors"),
            Err(ImportError::UnknownKind(_))
        ));
        assert_eq!(ImportFormat::parse("CSV").unwrap(), ImportFormat::Csv);
        assert_eq!(ImportFormat::detect("  \n[{}]"), ImportFormat::Json);
        assert_eq!(ImportFormat::detect("id,name"), ImportFormat::Csv);
    }

    /// The full-size case: exactly MAX_IMPORT_ROWS rows are accepted, and how long that
    /// takes. Slow in debug builds, hence ignored; run with
    /// `cargo test --release -p peloton-domain patrol::import -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn a_million_rows_fit() {
        let mut csv = String::from("id,display_name,precinct,email\n");
        for i in 0..MAX_IMPORT_ROWS {
            csv.push_str(&format!(
                "officer-{i},Officer Number {i},precinct-{},o{i}@police.example.org\n",
                i % 97
            ));
        }
        let mut calls = 0u64;
        let started = std::time::Instant::now();
        let report =
            parse_import(ImportKind::Officers, csv.as_bytes(), None, |_| calls += 1).unwrap();
        let csv_time = started.elapsed();
        assert_eq!(report.rows.len() as u64, MAX_IMPORT_ROWS);
        assert!(report.problems.is_empty());
        assert!(calls > MAX_IMPORT_ROWS / PROGRESS_EVERY);
        let json = match &report.rows {
            ImportRows::Officers(rows) => serde_json::to_vec(rows).unwrap(),
            _ => unreachable!(),
        };
        let started = std::time::Instant::now();
        let from_json = parse_import(ImportKind::Officers, &json, None, |_| {}).unwrap();
        let json_time = started.elapsed();
        assert_eq!(from_json.rows, report.rows);
        println!(
            "1,000,000 officers: CSV {} MB in {csv_time:?}, JSON {} MB in {json_time:?}",
            csv.len() / 1_000_000,
            json.len() / 1_000_000
        );
        csv.push_str("one-more,Officer,p1,\n");
        let refused = parse_import(ImportKind::Officers, csv.as_bytes(), None, |_| {});
        assert_eq!(
            refused.unwrap_err(),
            ImportError::TooManyRows {
                max: MAX_IMPORT_ROWS
            }
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            for kind in ImportKind::ALL {
                for format in [None, Some("csv"), Some("json")] {
                    let _ = parse_import(kind, &bytes, format, |_| {});
                }
            }
        }

        #[test]
        fn parse_never_panics_on_table_like_text(
            text in "(id|name|points|email|title|retailer|display_name|precinct|[a-z0-9@. \"\t]{0,6}|,|\r?\n){0,60}"
        ) {
            for kind in ImportKind::ALL {
                if let Ok(report) = parse_import(kind, text.as_bytes(), Some("csv"), |_| {}) {
                    prop_assert_eq!(report.rows.validate(), Ok(()));
                }
            }
        }

        #[test]
        fn parse_never_panics_on_json_like_text(
            text in "\\[?(\\{|\\}|\\[|\\]|,|:|\"(id|name|points|email)\"|\"[a-z .@]{0,5}\"|-?[0-9]{1,3}(\\.5)?|null|true| ){0,60}\\]?"
        ) {
            for kind in ImportKind::ALL {
                if let Ok(report) = parse_import(kind, text.as_bytes(), Some("json"), |_| {}) {
                    prop_assert_eq!(report.rows.validate(), Ok(()));
                }
            }
        }
    }
}
