//! The condition language of policy rules: a small, typed, CEL-like
//! expression language over the incident, its evidence and the target.
//!
//! Why not CEL itself: `cel-interpreter` 0.10 builds quickly here (~13 s
//! of CPU) but its parser *panics* on some malformed input (`a.x +` hits
//! an `unreachable!` in antlr4rust), and policies are operator-edited files
//! the daemon reloads while running. CEL also checks names and types only
//! at run time, so a typo (`incident.sevrity`) would silently make a rule
//! never apply. Here every expression is parsed and type-checked when the
//! policy loads — unknown fields, wrong types and bad regexes are load
//! errors with a column — and evaluation cannot panic.
//!
//! Fail safe: evaluation either yields a boolean or an error (a missing
//! optional field, a missing map key, NaN, division by zero). An error is
//! not a value: it aborts the whole expression, so `!` cannot turn it into
//! `true`, and the gate treats it as "condition not met" with the reason.
//! `has(...)` tests presence explicitly.
//!
//! docs/POLICY.md ("Condition language") is the user reference; keep the
//! field table [`FIELDS`] and the docs in step.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// Longest accepted expression, in bytes: conditions are one-liners, and a
/// bound keeps parsing cheap and recursion shallow.
const MAX_LEN: usize = 4096;

/// Deepest accepted nesting of sub-expressions (no stack overflow on
/// pathological input such as 10 000 opening parentheses).
const MAX_DEPTH: usize = 48;

/// Static type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Bool,
    Num,
    Str,
    List,
    Map,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Num => "number",
            Ty::Str => "string",
            Ty::List => "list of strings",
            Ty::Map => "map of strings",
        }
    }
}

/// A field the condition can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Severity,
    Kind,
    Signals,
    MaxScore,
    DurationS,
    Alerts,
    FiringAlerts,
    AnomalyCount,
    FlapCount,
    Group,
    DataAgeS,
    Namespace,
    WorkloadKind,
    Name,
    Replicas,
    ReadyReplicas,
    Labels,
    HasHpa,
    NamespacePods,
    Revision,
    Cause,
    Confidence,
    Causes,
    ProposalVerb,
    ProposalBy,
}

/// The fields: name, field, type, optional (may be absent at run time),
/// and a one-line description (docs/POLICY.md has the same table).
pub(crate) const FIELDS: &[(&str, Field, Ty, bool, &str)] = &[
    (
        "incident.severity",
        Field::Severity,
        Ty::Str,
        false,
        "`warning` or `critical`",
    ),
    (
        "incident.kind",
        Field::Kind,
        Ty::Str,
        false,
        "`anomaly`, `alert` or `predictive`",
    ),
    (
        "incident.signals",
        Field::Signals,
        Ty::List,
        false,
        "names of the anomalous signals",
    ),
    (
        "incident.max_score",
        Field::MaxScore,
        Ty::Num,
        true,
        "largest |peak score| of the signals; absent without signals",
    ),
    (
        "incident.duration_s",
        Field::DurationS,
        Ty::Num,
        true,
        "seconds from opening to the newest data",
    ),
    (
        "incident.alerts",
        Field::Alerts,
        Ty::List,
        false,
        "names (`alertname`) of member alerts",
    ),
    (
        "incident.firing_alerts",
        Field::FiringAlerts,
        Ty::List,
        false,
        "names of member alerts still firing",
    ),
    (
        "incident.anomaly_count",
        Field::AnomalyCount,
        Ty::Num,
        false,
        "anomalous samples across signals",
    ),
    (
        "incident.flap_count",
        Field::FlapCount,
        Ty::Num,
        false,
        "highest flap count of a member alert",
    ),
    (
        "incident.group",
        Field::Group,
        Ty::Map,
        false,
        "the incident's group labels",
    ),
    (
        "incident.data_age_s",
        Field::DataAgeS,
        Ty::Num,
        true,
        "seconds between the newest data and now",
    ),
    (
        "workload.namespace",
        Field::Namespace,
        Ty::Str,
        false,
        "the target's namespace",
    ),
    (
        "workload.kind",
        Field::WorkloadKind,
        Ty::Str,
        false,
        "`Deployment`, `StatefulSet` or `DaemonSet`",
    ),
    (
        "workload.name",
        Field::Name,
        Ty::Str,
        false,
        "the target's name",
    ),
    (
        "workload.replicas",
        Field::Replicas,
        Ty::Num,
        false,
        "`spec.replicas`",
    ),
    (
        "workload.ready_replicas",
        Field::ReadyReplicas,
        Ty::Num,
        false,
        "`status.readyReplicas`",
    ),
    (
        "workload.labels",
        Field::Labels,
        Ty::Map,
        false,
        "the target's labels",
    ),
    (
        "workload.has_hpa",
        Field::HasHpa,
        Ty::Bool,
        false,
        "an HPA scales the target",
    ),
    (
        "workload.namespace_pods",
        Field::NamespacePods,
        Ty::Num,
        false,
        "pods in the target's namespace",
    ),
    (
        "workload.revision",
        Field::Revision,
        Ty::Num,
        true,
        "Deployment revision now running",
    ),
    (
        "diagnosis.cause",
        Field::Cause,
        Ty::Str,
        true,
        "top hypothesis' cause id, e.g. `memory_leak`",
    ),
    (
        "diagnosis.confidence",
        Field::Confidence,
        Ty::Num,
        true,
        "top hypothesis' confidence in [0, 1]",
    ),
    (
        "diagnosis.causes",
        Field::Causes,
        Ty::List,
        true,
        "cause ids of all hypotheses, best first",
    ),
    (
        "proposal.verb",
        Field::ProposalVerb,
        Ty::Str,
        true,
        "`scale`, `restart` or `rollback`",
    ),
    (
        "proposal.by",
        Field::ProposalBy,
        Ty::Str,
        true,
        "`rules` or `llm`",
    ),
];

const ROOTS: &[&str] = &["incident", "workload", "diagnosis", "proposal"];

/// What a condition reads, computed once per decision by the gate.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub(crate) severity: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) signals: Vec<&'a str>,
    pub(crate) max_score: Option<f64>,
    pub(crate) duration_s: Option<f64>,
    pub(crate) alerts: Vec<&'a str>,
    pub(crate) firing_alerts: Vec<&'a str>,
    pub(crate) anomaly_count: f64,
    pub(crate) flap_count: f64,
    pub(crate) group: &'a BTreeMap<String, String>,
    pub(crate) data_age_s: Option<f64>,
    pub(crate) namespace: &'a str,
    pub(crate) workload_kind: &'a str,
    pub(crate) name: &'a str,
    pub(crate) replicas: f64,
    pub(crate) ready_replicas: f64,
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) has_hpa: bool,
    pub(crate) namespace_pods: f64,
    pub(crate) revision: Option<f64>,
    /// `None`: no diagnosis (or one without hypotheses).
    pub(crate) diagnosis: Option<DiagnosisFacts<'a>>,
    /// `None`: no proposal (the rule's own action).
    pub(crate) proposal: Option<(&'a str, &'a str)>,
}

/// The diagnosis part of [`Facts`].
#[derive(Debug, Clone)]
pub(crate) struct DiagnosisFacts<'a> {
    pub(crate) cause: &'a str,
    pub(crate) confidence: f64,
    pub(crate) causes: Vec<&'a str>,
}

/// A load-time problem in an expression, with its 1-based column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConditionError {
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ConditionError> {
    Err(ConditionError {
        column,
        message: message.into(),
    })
}

/// A parsed, type-checked condition.
#[derive(Debug)]
pub(crate) struct Condition {
    source: String,
    expr: Expr,
}

impl Condition {
    /// Parses and type-checks `source`; the result must be a bool.
    pub(crate) fn parse(source: &str) -> Result<Condition, ConditionError> {
        if source.len() > MAX_LEN {
            return err(1, format!("expression longer than {MAX_LEN} bytes"));
        }
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
            depth: 0,
        };
        let ast = parser.expr()?;
        let next = parser.peek();
        if next.tok != Tok::Eof {
            return err(next.col, format!("unexpected {}", next.tok.describe()));
        }
        let (expr, ty) = compile(&ast)?;
        if ty != Ty::Bool {
            return err(
                1,
                format!("a condition must be true or false, this is a {}", ty.name()),
            );
        }
        Ok(Condition {
            source: source.to_string(),
            expr,
        })
    }

    /// The expression as written.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `facts`: `Ok(bool)`, or why it could not be
    /// decided (which the gate treats as "not met").
    pub(crate) fn eval(&self, facts: &Facts<'_>) -> Result<bool, String> {
        match eval(&self.expr, facts)? {
            Val::Bool(b) => Ok(b),
            // Unreachable by type checking; still an error, never a pass.
            _ => Err("the condition did not yield true or false".into()),
        }
    }
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
    Not,
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Eof => "end of expression".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrack => "[",
            Tok::RBrack => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Not => "!",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            _ => "?",
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based column (in characters).
    col: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, ConditionError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = |a: char, b: char| c == a && chars.get(i + 1) == Some(&b);
        let (tok, len) = if two('&', '&') {
            (Tok::And, 2)
        } else if two('|', '|') {
            (Tok::Or, 2)
        } else if two('=', '=') {
            (Tok::Eq, 2)
        } else if two('!', '=') {
            (Tok::Ne, 2)
        } else if two('<', '=') {
            (Tok::Le, 2)
        } else if two('>', '=') {
            (Tok::Ge, 2)
        } else {
            match c {
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                '[' => (Tok::LBrack, 1),
                ']' => (Tok::RBrack, 1),
                ',' => (Tok::Comma, 1),
                '.' => (Tok::Dot, 1),
                '!' => (Tok::Not, 1),
                '<' => (Tok::Lt, 1),
                '>' => (Tok::Gt, 1),
                '+' => (Tok::Plus, 1),
                '-' => (Tok::Minus, 1),
                '*' => (Tok::Star, 1),
                '/' => (Tok::Slash, 1),
                '=' => return err(col, "`=` is not an operator; compare with `==`"),
                '&' | '|' => return err(col, format!("`{c}` is not an operator; use `{c}{c}`")),
                '"' | '\'' => {
                    let (s, len) = lex_string(&chars, i)?;
                    (Tok::Str(s), len)
                }
                c if c.is_ascii_digit() => {
                    let mut j = i;
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    if j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
                        j += 1;
                        while j < chars.len() && chars[j].is_ascii_digit() {
                            j += 1;
                        }
                    }
                    if j < chars.len() && (chars[j] == 'e' || chars[j] == 'E') {
                        let mut k = j + 1;
                        if k < chars.len() && (chars[k] == '+' || chars[k] == '-') {
                            k += 1;
                        }
                        if k < chars.len() && chars[k].is_ascii_digit() {
                            while k < chars.len() && chars[k].is_ascii_digit() {
                                k += 1;
                            }
                            j = k;
                        }
                    }
                    let text: String = chars[i..j].iter().collect();
                    match text.parse::<f64>() {
                        Ok(n) if n.is_finite() => (Tok::Num(n), j - i),
                        _ => return err(col, format!("invalid number `{text}`")),
                    }
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let mut j = i;
                    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                        j += 1;
                    }
                    (Tok::Ident(chars[i..j].iter().collect()), j - i)
                }
                other => return err(col, format!("unexpected character `{other}`")),
            }
        };
        out.push(Token { tok, col });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        col: chars.len() + 1,
    });
    Ok(out)
}

/// A quoted string starting at `start`; returns it and its length in chars.
fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), ConditionError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut j = start + 1;
    while j < chars.len() {
        match chars[j] {
            c if c == quote => return Ok((s, j + 1 - start)),
            '\\' => {
                let escaped = match chars.get(j + 1) {
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(other) => return err(j + 1, format!("unknown escape `\\{other}`")),
                    None => break,
                };
                s.push(escaped);
                j += 2;
            }
            c => {
                s.push(c);
                j += 1;
            }
        }
    }
    err(start + 1, "unterminated string")
}

// ---------------------------------------------------------------- parser

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    In,
}

#[derive(Debug)]
enum Ast {
    Bool(bool),
    Num(f64),
    Str(String),
    List(Vec<Ast>, usize),
    Ident(String, usize),
    Member(Box<Ast>, String, usize),
    Index(Box<Ast>, Box<Ast>, usize),
    Call(String, Vec<Ast>, usize),
    Method(Box<Ast>, String, Vec<Ast>, usize),
    Not(Box<Ast>, usize),
    Neg(Box<Ast>, usize),
    Binary(BinOp, Box<Ast>, Box<Ast>, usize),
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The lexer always ends with Eof and we never move past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: Tok) -> Result<(), ConditionError> {
        let t = self.peek();
        if t.tok == tok {
            self.bump();
            Ok(())
        } else {
            err(
                t.col,
                format!("expected `{}`, found {}", tok.symbol(), t.tok.describe()),
            )
        }
    }

    fn enter(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.peek().col, "expression nested too deeply");
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Ast, ConditionError> {
        self.enter()?;
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Ast, ConditionError> {
        let mut lhs = self.and()?;
        loop {
            let col = self.peek().col;
            if !self.eat(&Tok::Or) {
                return Ok(lhs);
            }
            let rhs = self.and()?;
            lhs = Ast::Binary(BinOp::Or, Box::new(lhs), Box::new(rhs), col);
        }
    }

    fn and(&mut self) -> Result<Ast, ConditionError> {
        let mut lhs = self.cmp()?;
        loop {
            let col = self.peek().col;
            if !self.eat(&Tok::And) {
                return Ok(lhs);
            }
            let rhs = self.cmp()?;
            lhs = Ast::Binary(BinOp::And, Box::new(lhs), Box::new(rhs), col);
        }
    }

    fn cmp(&mut self) -> Result<Ast, ConditionError> {
        let lhs = self.add()?;
        let t = self.peek().clone();
        let op = match &t.tok {
            Tok::Eq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::Ident(w) if w == "in" => BinOp::In,
            _ => return Ok(lhs),
        };
        self.bump();
        let rhs = self.add()?;
        let next = self.peek();
        if matches!(
            next.tok,
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
        ) || next.tok == Tok::Ident("in".into())
        {
            return err(next.col, "comparisons do not chain; combine them with `&&`");
        }
        Ok(Ast::Binary(op, Box::new(lhs), Box::new(rhs), t.col))
    }

    fn add(&mut self) -> Result<Ast, ConditionError> {
        let mut lhs = self.mul()?;
        loop {
            let t = self.peek().clone();
            let op = match t.tok {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.mul()?;
            lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs), t.col);
        }
    }

    fn mul(&mut self) -> Result<Ast, ConditionError> {
        let mut lhs = self.unary()?;
        loop {
            let t = self.peek().clone();
            let op = match t.tok {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.unary()?;
            lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs), t.col);
        }
    }

    fn unary(&mut self) -> Result<Ast, ConditionError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Not | Tok::Minus => {
                self.bump();
                self.enter()?;
                let inner = self.unary();
                self.depth -= 1;
                let inner = Box::new(inner?);
                Ok(if t.tok == Tok::Not {
                    Ast::Not(inner, t.col)
                } else {
                    Ast::Neg(inner, t.col)
                })
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Ast, ConditionError> {
        let mut node = self.primary()?;
        loop {
            let t = self.peek().clone();
            match t.tok {
                Tok::Dot => {
                    self.bump();
                    let name_tok = self.bump();
                    let Tok::Ident(name) = name_tok.tok else {
                        return err(
                            name_tok.col,
                            format!("expected a field name, found {}", name_tok.tok.describe()),
                        );
                    };
                    if self.eat(&Tok::LParen) {
                        let args = self.args(Tok::RParen)?;
                        node = Ast::Method(Box::new(node), name, args, name_tok.col);
                    } else {
                        node = Ast::Member(Box::new(node), name, name_tok.col);
                    }
                }
                Tok::LBrack => {
                    self.bump();
                    let key = self.expr()?;
                    self.expect(Tok::RBrack)?;
                    node = Ast::Index(Box::new(node), Box::new(key), t.col);
                }
                _ => return Ok(node),
            }
        }
    }

    /// Comma-separated expressions up to `close` (already past the opener).
    fn args(&mut self, close: Tok) -> Result<Vec<Ast>, ConditionError> {
        let mut args = Vec::new();
        if self.eat(&close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(&close) {
                return Ok(args);
            }
            self.expect(Tok::Comma)?;
        }
    }

    fn primary(&mut self) -> Result<Ast, ConditionError> {
        let t = self.bump();
        match t.tok {
            Tok::Num(n) => Ok(Ast::Num(n)),
            Tok::Str(s) => Ok(Ast::Str(s)),
            Tok::Ident(w) if w == "true" => Ok(Ast::Bool(true)),
            Tok::Ident(w) if w == "false" => Ok(Ast::Bool(false)),
            Tok::Ident(w) if w == "in" => err(t.col, "expected a value, found `in`"),
            Tok::Ident(w) => {
                if self.eat(&Tok::LParen) {
                    let args = self.args(Tok::RParen)?;
                    Ok(Ast::Call(w, args, t.col))
                } else {
                    Ok(Ast::Ident(w, t.col))
                }
            }
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(Tok::RParen)?;
                Ok(inner)
            }
            Tok::LBrack => {
                let items = self.args(Tok::RBrack)?;
                Ok(Ast::List(items, t.col))
            }
            other => err(
                t.col,
                format!("expected a value, found {}", other.describe()),
            ),
        }
    }
}

// ---------------------------------------------------------------- type check

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Diagnosis,
    Proposal,
}

#[derive(Debug)]
enum Expr {
    Bool(bool),
    Num(f64),
    Str(String),
    List(Vec<String>),
    Field(Field, &'static str),
    Index(Box<Expr>, Box<Expr>),
    HasField(Field),
    HasKey(Box<Expr>, Box<Expr>),
    HasRoot(Root),
    Size(Box<Expr>),
    StrOp(StrOp, Box<Expr>, Box<Expr>),
    Matches(Box<Expr>, Regex),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

/// `a.b.c` as a dotted name, when the node is a plain path.
fn path_of(ast: &Ast) -> Option<(String, usize)> {
    match ast {
        Ast::Ident(name, col) => Some((name.clone(), *col)),
        Ast::Member(inner, name, _) => {
            let (p, col) = path_of(inner)?;
            Some((format!("{p}.{name}"), col))
        }
        _ => None,
    }
}

fn lookup(path: &str, col: usize) -> Result<(Field, Ty, &'static str), ConditionError> {
    if let Some((name, field, ty, _, _)) = FIELDS.iter().find(|f| f.0 == path) {
        return Ok((*field, *ty, name));
    }
    let root = path.split('.').next().unwrap_or(path);
    if ROOTS.contains(&root) {
        let known: Vec<&str> = FIELDS
            .iter()
            .filter(|f| f.0.split('.').next() == Some(root))
            .map(|f| &f.0[root.len() + 1..])
            .collect();
        if path == root {
            return err(
                col,
                format!(
                    "`{root}` is an object; use one of its fields: {}",
                    known.join(", ")
                ),
            );
        }
        return err(
            col,
            format!("unknown field `{path}`; `{root}` has: {}", known.join(", ")),
        );
    }
    err(
        col,
        format!(
            "unknown name `{path}`; conditions read {} (strings need quotes)",
            ROOTS.join(", ")
        ),
    )
}

fn col_of(ast: &Ast) -> usize {
    match ast {
        Ast::Bool(_) | Ast::Num(_) | Ast::Str(_) => 0,
        Ast::List(_, c)
        | Ast::Ident(_, c)
        | Ast::Member(_, _, c)
        | Ast::Index(_, _, c)
        | Ast::Call(_, _, c)
        | Ast::Method(_, _, _, c)
        | Ast::Not(_, c)
        | Ast::Neg(_, c)
        | Ast::Binary(_, _, _, c) => *c,
    }
}

fn expect_ty(ast: &Ast, want: Ty, what: &str) -> Result<Expr, ConditionError> {
    let (e, ty) = compile(ast)?;
    if ty != want {
        return err(
            col_of(ast).max(1),
            format!("{what} must be a {}, found a {}", want.name(), ty.name()),
        );
    }
    Ok(e)
}

fn compile(ast: &Ast) -> Result<(Expr, Ty), ConditionError> {
    Ok(match ast {
        Ast::Bool(b) => (Expr::Bool(*b), Ty::Bool),
        Ast::Num(n) => (Expr::Num(*n), Ty::Num),
        Ast::Str(s) => (Expr::Str(s.clone()), Ty::Str),
        Ast::List(items, _) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Ast::Str(s) => out.push(s.clone()),
                    other => {
                        return err(
                            col_of(other).max(1),
                            "list literals hold quoted strings only",
                        )
                    }
                }
            }
            (Expr::List(out), Ty::List)
        }
        Ast::Ident(..) | Ast::Member(..) => {
            let (path, col) = match path_of(ast) {
                Some(p) => p,
                None => return err(col_of(ast), "only fields have members"),
            };
            let (field, ty, name) = lookup(&path, col)?;
            (Expr::Field(field, name), ty)
        }
        Ast::Index(map, key, col) => {
            let (m, ty) = compile(map)?;
            if ty != Ty::Map {
                return err(*col, format!("`[...]` needs a map, found a {}", ty.name()));
            }
            let k = expect_ty(key, Ty::Str, "a map key")?;
            (Expr::Index(Box::new(m), Box::new(k)), Ty::Str)
        }
        Ast::Call(name, args, col) => compile_call(name, args, *col)?,
        Ast::Method(recv, name, args, col) => {
            let r = expect_ty(recv, Ty::Str, &format!("the receiver of `{name}()`"))?;
            let [arg] = args.as_slice() else {
                return err(*col, format!("`{name}()` takes one argument"));
            };
            let op = match name.as_str() {
                "startsWith" => StrOp::StartsWith,
                "endsWith" => StrOp::EndsWith,
                "contains" => StrOp::Contains,
                "matches" => {
                    let Ast::Str(pattern) = arg else {
                        return err(*col, "`matches()` takes a quoted regular expression");
                    };
                    let re = Regex::new(pattern).map_err(|e| ConditionError {
                        column: *col,
                        message: format!("invalid regular expression: {e}"),
                    })?;
                    return Ok((Expr::Matches(Box::new(r), re), Ty::Bool));
                }
                other => {
                    return err(
                        *col,
                        format!(
                            "unknown method `{other}`; strings have startsWith, endsWith, contains, matches"
                        ),
                    )
                }
            };
            let a = expect_ty(arg, Ty::Str, &format!("the argument of `{name}()`"))?;
            (Expr::StrOp(op, Box::new(r), Box::new(a)), Ty::Bool)
        }
        Ast::Not(inner, _) => (
            Expr::Not(Box::new(expect_ty(inner, Ty::Bool, "the operand of `!`")?)),
            Ty::Bool,
        ),
        Ast::Neg(inner, _) => (
            Expr::Neg(Box::new(expect_ty(inner, Ty::Num, "the operand of `-`")?)),
            Ty::Num,
        ),
        Ast::Binary(op, lhs, rhs, col) => compile_binary(*op, lhs, rhs, *col)?,
    })
}

fn compile_call(name: &str, args: &[Ast], col: usize) -> Result<(Expr, Ty), ConditionError> {
    let [arg] = args else {
        return err(col, format!("`{name}()` takes one argument"));
    };
    match name {
        "has" => {
            if let Ast::Ident(root, rcol) = arg {
                return match root.as_str() {
                    "diagnosis" => Ok((Expr::HasRoot(Root::Diagnosis), Ty::Bool)),
                    "proposal" => Ok((Expr::HasRoot(Root::Proposal), Ty::Bool)),
                    _ => lookup(root, *rcol).map(|(f, _, _)| (Expr::HasField(f), Ty::Bool)),
                };
            }
            if let Ast::Index(map, key, icol) = arg {
                let (m, ty) = compile(map)?;
                if ty != Ty::Map {
                    return err(*icol, format!("`[...]` needs a map, found a {}", ty.name()));
                }
                let k = expect_ty(key, Ty::Str, "a map key")?;
                return Ok((Expr::HasKey(Box::new(m), Box::new(k)), Ty::Bool));
            }
            match path_of(arg) {
                Some((path, pcol)) => {
                    let (field, _, _) = lookup(&path, pcol)?;
                    Ok((Expr::HasField(field), Ty::Bool))
                }
                None => err(col, "`has()` takes a field, e.g. has(diagnosis.cause)"),
            }
        }
        "size" => {
            let (e, ty) = compile(arg)?;
            if !matches!(ty, Ty::Str | Ty::List | Ty::Map) {
                return err(
                    col,
                    format!(
                        "`size()` needs a string, list or map, found a {}",
                        ty.name()
                    ),
                );
            }
            Ok((Expr::Size(Box::new(e)), Ty::Num))
        }
        other => err(
            col,
            format!("unknown function `{other}`; functions are has, size"),
        ),
    }
}

fn compile_binary(
    op: BinOp,
    lhs: &Ast,
    rhs: &Ast,
    col: usize,
) -> Result<(Expr, Ty), ConditionError> {
    let (l, lt) = compile(lhs)?;
    let (r, rt) = compile(rhs)?;
    let sym = match op {
        BinOp::And => "&&",
        BinOp::Or => "||",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::In => "in",
    };
    let mismatch = || {
        err(
            col,
            format!("`{sym}` cannot combine a {} and a {}", lt.name(), rt.name()),
        )
    };
    let ty = match op {
        BinOp::And | BinOp::Or => {
            if lt != Ty::Bool || rt != Ty::Bool {
                return mismatch();
            }
            Ty::Bool
        }
        BinOp::Eq | BinOp::Ne => {
            if lt != rt || !matches!(lt, Ty::Bool | Ty::Num | Ty::Str) {
                return mismatch();
            }
            Ty::Bool
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            if lt != Ty::Num || rt != Ty::Num {
                return mismatch();
            }
            Ty::Bool
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
            if lt != Ty::Num || rt != Ty::Num {
                return mismatch();
            }
            Ty::Num
        }
        BinOp::In => {
            if lt != Ty::Str || !matches!(rt, Ty::List | Ty::Map) {
                return mismatch();
            }
            Ty::Bool
        }
    };
    Ok((Expr::Bin(op, Box::new(l), Box::new(r)), ty))
}

// ---------------------------------------------------------------- evaluation

#[derive(Debug, Clone, Copy)]
enum Val<'e> {
    Bool(bool),
    Num(f64),
    Str(&'e str),
    Refs(&'e [&'e str]),
    Owned(&'e [String]),
    Map(&'e BTreeMap<String, String>),
}

fn field<'e>(f: Field, name: &str, x: &'e Facts<'e>) -> Result<Val<'e>, String> {
    let missing = |why: &str| Err(format!("`{name}` is not available ({why})"));
    Ok(match f {
        Field::Severity => Val::Str(x.severity),
        Field::Kind => Val::Str(x.kind),
        Field::Signals => Val::Refs(&x.signals),
        Field::MaxScore => match x.max_score {
            Some(v) => Val::Num(v),
            None => return missing("the incident has no anomalous signals"),
        },
        Field::DurationS => match x.duration_s {
            Some(v) => Val::Num(v),
            None => return missing("the incident has no data time"),
        },
        Field::Alerts => Val::Refs(&x.alerts),
        Field::FiringAlerts => Val::Refs(&x.firing_alerts),
        Field::AnomalyCount => Val::Num(x.anomaly_count),
        Field::FlapCount => Val::Num(x.flap_count),
        Field::Group => Val::Map(x.group),
        Field::DataAgeS => match x.data_age_s {
            Some(v) => Val::Num(v),
            None => return missing("the incident has no data time"),
        },
        Field::Namespace => Val::Str(x.namespace),
        Field::WorkloadKind => Val::Str(x.workload_kind),
        Field::Name => Val::Str(x.name),
        Field::Replicas => Val::Num(x.replicas),
        Field::ReadyReplicas => Val::Num(x.ready_replicas),
        Field::Labels => Val::Map(x.labels),
        Field::HasHpa => Val::Bool(x.has_hpa),
        Field::NamespacePods => Val::Num(x.namespace_pods),
        Field::Revision => match x.revision {
            Some(v) => Val::Num(v),
            None => return missing("no Deployment revision known"),
        },
        Field::Cause | Field::Confidence | Field::Causes => match &x.diagnosis {
            None => return missing("no diagnosis"),
            Some(d) => match f {
                Field::Cause => Val::Str(d.cause),
                Field::Confidence => Val::Num(d.confidence),
                _ => Val::Refs(&d.causes),
            },
        },
        Field::ProposalVerb | Field::ProposalBy => match x.proposal {
            None => return missing("no proposal"),
            Some((verb, by)) => Val::Str(if f == Field::ProposalVerb { verb } else { by }),
        },
    })
}

fn present(f: Field, x: &Facts<'_>) -> bool {
    match f {
        Field::MaxScore => x.max_score.is_some(),
        Field::DurationS => x.duration_s.is_some(),
        Field::DataAgeS => x.data_age_s.is_some(),
        Field::Revision => x.revision.is_some(),
        Field::Cause | Field::Confidence | Field::Causes => x.diagnosis.is_some(),
        Field::ProposalVerb | Field::ProposalBy => x.proposal.is_some(),
        _ => true,
    }
}

const TYPE_BUG: &str = "internal type error in condition";

fn num(v: Val<'_>) -> Result<f64, String> {
    match v {
        Val::Num(n) if n.is_nan() => Err("a value is not a number (NaN)".into()),
        Val::Num(n) => Ok(n),
        _ => Err(TYPE_BUG.into()),
    }
}

fn string(v: Val<'_>) -> Result<&str, String> {
    match v {
        Val::Str(s) => Ok(s),
        _ => Err(TYPE_BUG.into()),
    }
}

fn boolean(v: Val<'_>) -> Result<bool, String> {
    match v {
        Val::Bool(b) => Ok(b),
        _ => Err(TYPE_BUG.into()),
    }
}

fn eval<'e>(e: &'e Expr, x: &'e Facts<'e>) -> Result<Val<'e>, String> {
    Ok(match e {
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Num(n) => Val::Num(*n),
        Expr::Str(s) => Val::Str(s),
        Expr::List(l) => Val::Owned(l),
        Expr::Field(f, name) => field(*f, name, x)?,
        Expr::Index(m, k) => {
            let key = string(eval(k, x)?)?;
            match eval(m, x)? {
                Val::Map(map) => match map.get(key) {
                    Some(v) => Val::Str(v),
                    None => return Err(format!("label `{key}` is not set")),
                },
                _ => return Err(TYPE_BUG.into()),
            }
        }
        Expr::HasField(f) => Val::Bool(present(*f, x)),
        Expr::HasRoot(Root::Diagnosis) => Val::Bool(x.diagnosis.is_some()),
        Expr::HasRoot(Root::Proposal) => Val::Bool(x.proposal.is_some()),
        Expr::HasKey(m, k) => {
            let key = string(eval(k, x)?)?;
            match eval(m, x)? {
                Val::Map(map) => Val::Bool(map.contains_key(key)),
                _ => return Err(TYPE_BUG.into()),
            }
        }
        Expr::Size(inner) => Val::Num(match eval(inner, x)? {
            Val::Str(s) => s.chars().count() as f64,
            Val::Refs(l) => l.len() as f64,
            Val::Owned(l) => l.len() as f64,
            Val::Map(m) => m.len() as f64,
            _ => return Err(TYPE_BUG.into()),
        }),
        Expr::StrOp(op, a, b) => {
            let a = string(eval(a, x)?)?;
            let b = string(eval(b, x)?)?;
            Val::Bool(match op {
                StrOp::StartsWith => a.starts_with(b),
                StrOp::EndsWith => a.ends_with(b),
                StrOp::Contains => a.contains(b),
            })
        }
        Expr::Matches(a, re) => Val::Bool(re.is_match(string(eval(a, x)?)?)),
        Expr::Not(inner) => Val::Bool(!boolean(eval(inner, x)?)?),
        Expr::Neg(inner) => Val::Num(-num(eval(inner, x)?)?),
        Expr::Bin(op, a, b) => eval_binary(*op, a, b, x)?,
    })
}

fn eval_binary<'e>(
    op: BinOp,
    a: &'e Expr,
    b: &'e Expr,
    x: &'e Facts<'e>,
) -> Result<Val<'e>, String> {
    // Short-circuit: `has(diagnosis) && diagnosis.cause == "x"` must not
    // evaluate the right side without a diagnosis. An error on the left is
    // still an error (never skipped into a `true`).
    match op {
        BinOp::And => {
            return Ok(Val::Bool(boolean(eval(a, x)?)? && boolean(eval(b, x)?)?));
        }
        BinOp::Or => {
            return Ok(Val::Bool(boolean(eval(a, x)?)? || boolean(eval(b, x)?)?));
        }
        _ => {}
    }
    let l = eval(a, x)?;
    let r = eval(b, x)?;
    Ok(match op {
        BinOp::Eq | BinOp::Ne => {
            let same = match (l, r) {
                (Val::Bool(p), Val::Bool(q)) => p == q,
                (Val::Str(p), Val::Str(q)) => p == q,
                (Val::Num(_), Val::Num(_)) => num(l)? == num(r)?,
                _ => return Err(TYPE_BUG.into()),
            };
            Val::Bool(same == (op == BinOp::Eq))
        }
        BinOp::Lt => Val::Bool(num(l)? < num(r)?),
        BinOp::Le => Val::Bool(num(l)? <= num(r)?),
        BinOp::Gt => Val::Bool(num(l)? > num(r)?),
        BinOp::Ge => Val::Bool(num(l)? >= num(r)?),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
            let (p, q) = (num(l)?, num(r)?);
            let v = match op {
                BinOp::Add => p + q,
                BinOp::Sub => p - q,
                BinOp::Mul => p * q,
                _ if q == 0.0 => return Err("division by zero".into()),
                _ => p / q,
            };
            if !v.is_finite() {
                return Err("arithmetic overflow".into());
            }
            Val::Num(v)
        }
        BinOp::In => {
            let needle = string(l)?;
            Val::Bool(match r {
                Val::Refs(list) => list.contains(&needle),
                Val::Owned(list) => list.iter().any(|s| s == needle),
                Val::Map(m) => m.contains_key(needle),
                _ => return Err(TYPE_BUG.into()),
            })
        }
        BinOp::And | BinOp::Or => return Err(TYPE_BUG.into()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn facts<'a>(
        group: &'a BTreeMap<String, String>,
        labels: &'a BTreeMap<String, String>,
    ) -> Facts<'a> {
        Facts {
            severity: "critical",
            kind: "anomaly",
            signals: vec!["cpu_saturation", "latency_p99"],
            max_score: Some(7.5),
            duration_s: Some(600.0),
            alerts: vec!["HighCPU"],
            firing_alerts: vec!["HighCPU"],
            anomaly_count: 12.0,
            flap_count: 0.0,
            group,
            data_age_s: Some(10.0),
            namespace: "shop",
            workload_kind: "Deployment",
            name: "cart",
            replicas: 3.0,
            ready_replicas: 1.0,
            labels,
            has_hpa: false,
            namespace_pods: 20.0,
            revision: Some(4.0),
            diagnosis: None,
            proposal: None,
        }
    }

    fn run(src: &str) -> Result<bool, String> {
        let group = BTreeMap::from([("namespace".to_string(), "shop".to_string())]);
        let labels = BTreeMap::from([("tier".to_string(), "frontend".to_string())]);
        let c = Condition::parse(src).map_err(|e| format!("parse: {e}"))?;
        c.eval(&facts(&group, &labels))
    }

    #[test]
    fn evaluates_comparisons_lists_maps_and_methods() {
        let cases = [
            (
                "incident.severity == 'critical' && incident.max_score >= 5",
                true,
            ),
            (
                "incident.max_score > 8 || 'cpu_saturation' in incident.signals",
                true,
            ),
            ("!(workload.replicas > 2)", false),
            ("workload.ready_replicas < workload.replicas * 0.5", true),
            ("workload.labels['tier'] == \"frontend\"", true),
            ("'team' in workload.labels", false),
            ("has(workload.labels['team'])", false),
            (
                "workload.name.startsWith('ca') && workload.name.matches('^c.r')",
                true,
            ),
            ("incident.kind in ['anomaly', 'alert']", true),
            ("size(incident.signals) == 2 && -1 < 0", true),
            ("has(diagnosis) && diagnosis.cause == 'memory_leak'", false),
            ("incident.duration_s / 60 >= 10", true),
        ];
        for (src, want) in cases {
            assert_eq!(run(src), Ok(want), "{src}");
        }
    }

    #[test]
    fn runtime_errors_are_errors_not_values_even_under_negation() {
        let e = run("!(diagnosis.cause == 'memory_leak')").expect_err("no diagnosis");
        assert!(
            e.contains("diagnosis.cause") && e.contains("no diagnosis"),
            "{e}"
        );
        let e = run("workload.labels['team'] == 'x' || true").expect_err("missing key");
        assert!(e.contains("`team`"), "{e}");
        let e = run("workload.replicas / (workload.replicas - 3) > 1").expect_err("div 0");
        assert!(e.contains("division by zero"), "{e}");
    }

    #[test]
    fn load_errors_name_the_column_and_the_problem() {
        let cases = [
            (
                "incident.sevrity == 'critical'",
                1,
                "unknown field `incident.sevrity`",
            ),
            (
                "incident.severity == 3",
                19,
                "cannot combine a string and a number",
            ),
            ("workload.replicas +", 20, "expected a value"),
            ("a.x +", 6, "expected a value"),
            ("a.x > 1", 1, "unknown name `a.x`"),
            ("incident.severity = 'x'", 19, "compare with `==`"),
            ("'unterminated", 1, "unterminated string"),
            ("workload.replicas", 1, "must be true or false"),
            (
                "workload.name.matches('(')",
                15,
                "invalid regular expression",
            ),
            ("1 < 2 < 3", 7, "do not chain"),
            ("incident == 1", 1, "is an object"),
            ("severity == 'critical'", 1, "strings need quotes"),
        ];
        for (src, col, needle) in cases {
            let e = Condition::parse(src).expect_err(src);
            assert_eq!(e.column, col, "{src}: {e}");
            assert!(e.message.contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn pathological_input_is_an_error_not_a_crash() {
        let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Condition::parse(&deep).is_err());
        let nots = format!("{}true", "!".repeat(10_000));
        assert!(Condition::parse(&nots).is_err());
        assert!(Condition::parse(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(Condition::parse("").is_err());
        assert!(Condition::parse("1e999 > 0").is_err());
    }

    #[test]
    fn nan_never_compares() {
        let group = BTreeMap::new();
        let labels = BTreeMap::new();
        let mut f = facts(&group, &labels);
        f.max_score = Some(f64::NAN);
        let c = Condition::parse("!(incident.max_score < 1)").expect("parses");
        assert!(c.eval(&f).is_err());
    }
}
