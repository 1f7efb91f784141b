//! Label and field selectors, parsed and matched the way apimachinery does.
//!
//! - [`LabelSelector`]: the full string syntax of `k8s.io/apimachinery/pkg/labels`
//!   (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`, `k>1`, `k<1`), plus
//!   [`LabelSelector::from_k8s`] for the structured `metav1.LabelSelector` of workload specs.
//! - [`FieldSelector`]: the syntax of `k8s.io/apimachinery/pkg/fields` (`f=v`, `f==v`, `f!=v`,
//!   with `\,`, `\=` and `\\` escapes in values).
//!
//! Both render back to the canonical string apimachinery's `String()` produces, and an empty
//! selector matches everything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

/// Why a selector could not be parsed or built. Messages follow apimachinery's wording, so
/// they can go to clients verbatim in a 400 Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// One requirement of a label selector string is invalid (bad key, operator or values).
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A label selector string has a token where another was expected, e.g.
    /// `found ',', expected: !, identifier, or 'end of string'`.
    #[error("{0}")]
    Syntax(String),
    /// A structured `metav1.LabelSelector` holds an invalid key, value or value count.
    #[error("{0}")]
    InvalidRequirement(String),
    /// A `matchExpressions` operator other than `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error("{0:?} is not a valid label selector operator")]
    UnknownOperator(String),
    /// A field selector term has no `=`, `==` or `!=` operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole field selector string.
        selector: String,
        /// The term that could not be understood.
        term: String,
    },
    /// A field selector value holds a backslash escape other than `\\`, `\,`, `\=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    FieldEscape(String),
    /// A field selector value holds an unescaped `,` or `=`.
    #[error("invalid field selector: unescaped character in value: {0:?}")]
    FieldUnescaped(char),
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one [`LabelRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// `k=v`: the label exists and equals the value.
    Equals,
    /// `k==v`: same as [`LabelOperator::Equals`], kept apart to render back as written.
    DoubleEquals,
    /// `k!=v`: the label is absent or differs from the value.
    NotEquals,
    /// `k in (a,b)`: the label exists and is one of the values.
    In,
    /// `k notin (a,b)`: the label is absent or is none of the values.
    NotIn,
    /// `k`: the label exists.
    Exists,
    /// `!k`: the label does not exist.
    DoesNotExist,
    /// `k>n`: the label exists, is an integer, and is greater than `n`.
    GreaterThan,
    /// `k<n`: the label exists, is an integer, and is less than `n`.
    LessThan,
}

impl LabelOperator {
    /// The operator as it appears in a selector string (`in` and `notin` with spaces around).
    fn as_infix(self) -> &'static str {
        match self {
            LabelOperator::Equals => "=",
            LabelOperator::DoubleEquals => "==",
            LabelOperator::NotEquals => "!=",
            LabelOperator::In => " in ",
            LabelOperator::NotIn => " notin ",
            LabelOperator::Exists | LabelOperator::DoesNotExist => "",
            LabelOperator::GreaterThan => ">",
            LabelOperator::LessThan => "<",
        }
    }
}

/// One requirement of a [`LabelSelector`]: a key, an operator and (sorted, deduplicated) values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelRequirement {
    key: String,
    operator: LabelOperator,
    values: Vec<String>,
}

impl LabelRequirement {
    /// Builds a requirement, validating like apimachinery's `labels.NewRequirement`: the key
    /// must be a qualified name; `In`/`NotIn` need at least one value; `=`/`==`/`!=` exactly
    /// one; `Exists`/`DoesNotExist` none; `>`/`<` exactly one integer. Values other than for
    /// `>`/`<` must be valid label values. Errors are [`SelectorError::InvalidRequirement`].
    pub fn new(
        key: impl Into<String>,
        operator: LabelOperator,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, SelectorError> {
        Self::build(key.into(), operator, values.into_iter().map(Into::into).collect())
            .map_err(SelectorError::InvalidRequirement)
    }

    /// [`LabelRequirement::new`] with apimachinery's bare message as the error.
    fn build(key: String, operator: LabelOperator, mut values: Vec<String>) -> Result<Self, String> {
        validate_label_key(&key)?;
        match operator {
            LabelOperator::In | LabelOperator::NotIn => {
                if values.is_empty() {
                    return Err("for 'in', 'notin' operators, values set can't be empty".into());
                }
            }
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::NotEquals => {
                if values.len() != 1 {
                    return Err("exact-match compatibility requires one single value".into());
                }
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist => {
                if !values.is_empty() {
                    return Err("values set must be empty for exists and does not exist".into());
                }
            }
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                if values.len() != 1 {
                    return Err("for 'Gt', 'Lt' operators, exactly one value is required".into());
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return Err("for 'Gt', 'Lt' operators, the value must be an integer".into());
                }
            }
        }
        if !matches!(operator, LabelOperator::GreaterThan | LabelOperator::LessThan) {
            for value in &values {
                validate_label_value(&key, value)?;
            }
        }
        values.sort();
        values.dedup();
        Ok(LabelRequirement { key, operator, values })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> LabelOperator {
        self.operator
    }

    /// The values, sorted and without duplicates (empty for `Exists`/`DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement. `!=` and `notin` match when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let current = labels.get(&self.key);
        match self.operator {
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::In => {
                current.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            LabelOperator::NotEquals | LabelOperator::NotIn => {
                current.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            LabelOperator::Exists => current.is_some(),
            LabelOperator::DoesNotExist => current.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let Some(Ok(have)) = current.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let Some(Ok(want)) = self.values.first().map(|v| v.parse::<i64>()) else {
                    return false;
                };
                if self.operator == LabelOperator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            LabelOperator::Exists => f.write_str(&self.key),
            LabelOperator::DoesNotExist => write!(f, "!{}", self.key),
            LabelOperator::In | LabelOperator::NotIn => {
                write!(f, "{}{}({})", self.key, self.operator.as_infix(), self.values.join(","))
            }
            op => write!(f, "{}{}{}", self.key, op.as_infix(), self.values.join(",")),
        }
    }
}

/// A label selector: the conjunction of its [`LabelRequirement`]s, kept sorted by key.
/// The empty selector (also [`Default`]) matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Builds a selector from requirements (sorted by key, as apimachinery's `Add` does).
    pub fn from_requirements(mut requirements: Vec<LabelRequirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// Parses Kubernetes' label selector string syntax (as `labels.Parse`). The empty or
    /// all-whitespace string gives the empty selector.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser { items: lex(selector), pos: 0 };
        Ok(Self::from_requirements(parser.parse()?))
    }

    /// Converts a structured `metav1.LabelSelector` (as `metav1.LabelSelectorAsSelector`):
    /// `matchLabels` become `=` requirements, `matchExpressions` support `In`, `NotIn`,
    /// `Exists` and `DoesNotExist`. A selector with neither matches everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let r = LabelRequirement::new(key.as_str(), LabelOperator::Equals, [value.as_str()])?;
            requirements.push(r);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => LabelOperator::In,
                "NotIn" => LabelOperator::NotIn,
                "Exists" => LabelOperator::Exists,
                "DoesNotExist" => LabelOperator::DoesNotExist,
                other => return Err(SelectorError::UnknownOperator(other.to_string())),
            };
            let values = expr.values.iter().flatten().map(String::as_str);
            let r = LabelRequirement::new(expr.key.as_str(), op, values)?;
            requirements.push(r);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement (always true for the empty selector).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Requirements joined by commas: the canonical string of both selector kinds.
fn write_comma_separated<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, r) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{r}")?;
    }
    Ok(())
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_comma_separated(f, &self.requirements)
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// --- lexer (apimachinery labels/selector.go `Lexer`) -------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Debug, Clone)]
struct Scanned {
    tok: Token,
    lit: String,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special_symbol(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn symbol_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

/// Splits a label selector string into tokens, ending with exactly one `EndOfString`.
fn lex(input: &str) -> Vec<Scanned> {
    let chars: Vec<char> = input.chars().collect();
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_whitespace(chars[i]) {
            i += 1;
        }
        let Some(&c) = chars.get(i) else {
            items.push(Scanned { tok: Token::EndOfString, lit: String::new() });
            return items;
        };
        if is_special_symbol(c) {
            // Longest match among the symbol tokens.
            let mut buffer = String::new();
            let mut last: Option<Scanned> = None;
            while let Some(&c) = chars.get(i) {
                if !is_special_symbol(c) {
                    break;
                }
                buffer.push(c);
                if let Some(tok) = symbol_token(&buffer) {
                    last = Some(Scanned { tok, lit: buffer.clone() });
                } else if last.is_some() {
                    break;
                }
                i += 1;
            }
            items.push(
                last.unwrap_or(Scanned { tok: Token::Error, lit: format!("error expected: keyword found '{buffer}'") }),
            );
        } else {
            let start = i;
            while i < chars.len() && !is_whitespace(chars[i]) && !is_special_symbol(chars[i]) {
                i += 1;
            }
            let lit: String = chars[start..i].iter().collect();
            let tok = match lit.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            items.push(Scanned { tok, lit });
        }
    }
}

// --- parser (apimachinery labels/selector.go `Parser`) -----------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<Scanned>,
    pos: usize,
}

impl Parser {
    fn lookahead(&self, ctx: Context) -> (Token, String) {
        let (tok, lit) = match self.items.get(self.pos) {
            Some(s) => (s.tok, s.lit.clone()),
            None => (Token::EndOfString, String::new()),
        };
        // In a value context the keywords `in`/`notin` are plain identifiers.
        let tok = match (ctx, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            _ => tok,
        };
        (tok, lit)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.lookahead(ctx);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self.parse_requirement().map_err(SelectorError::Requirement)?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::Syntax(format!("found '{l}', expected: ',' or 'end of string'")))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return LabelRequirement::build(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            LabelOperator::In | LabelOperator::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        LabelRequirement::build(key, op, values)
    }

    /// Reads `key` or `!key`; infers `Exists`/`DoesNotExist` when no binary operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<LabelOperator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(LabelOperator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        validate_label_key(&lit)?;
        let (next, _) = self.lookahead(Context::Values);
        if op.is_none() && matches!(next, Token::EndOfString | Token::Comma) {
            op = Some(LabelOperator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<LabelOperator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => LabelOperator::In,
            Token::Equals => LabelOperator::Equals,
            Token::DoubleEquals => LabelOperator::DoubleEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            Token::NotIn => LabelOperator::NotIn,
            Token::NotEquals => LabelOperator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt")),
        })
    }

    /// Reads `(a,b,…)`; empty members (`()`, `(,a)`, `(a,)`) stand for the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.push(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new()); // "(,"
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        values.push(String::new()); // ",)"
                        return Ok(values);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        values.push(String::new()); // ",,"
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<String, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if matches!(tok, Token::EndOfString | Token::Comma) {
            return Ok(String::new());
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(lit)
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// --- validation (apimachinery util/validation, shared with object validation) ----------------

use crate::validation::names::{
    is_qualified_name as qualified_name_errors, is_valid_label_value as label_value_errors,
};

fn validate_label_key(key: &str) -> Result<(), String> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid label key \"{key}\": {}", errs.join("; ")))
    }
}

fn validate_label_value(key: &str, value: &str) -> Result<(), String> {
    let errs = label_value_errors(value);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid label value: \"{value}\": at key: '{key}': {}", errs.join("; ")))
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one [`FieldRequirement`]. `==` parses as [`FieldOperator::Equals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One term of a [`FieldSelector`]; `value` is unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// The field name, e.g. `metadata.name` or `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The (unescaped) value compared with.
    pub value: String,
}

impl FieldRequirement {
    /// Whether the object's value of the field (`""` when absent) satisfies the term.
    pub fn matches(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{}{}", self.field, op, escape_field_value(&self.value))
    }
}

/// A field selector: the conjunction of [`FieldRequirement`]s, in the order apimachinery
/// keeps them (terms sorted as raw strings). The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses `field=value`, `field==value`, `field!=value` terms separated by commas, as
    /// apimachinery's `fields.ParseSelector`. In values, `\,`, `\=` and `\\` escape; an
    /// unescaped `,`/`=` or any other escape is an error. Field names are not checked here:
    /// the server checks [`FieldSelector::fields`] against what the resource supports.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut terms = split_field_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_field_term(term) else {
                return Err(SelectorError::FieldTerm { selector: selector.to_string(), term: term.to_string() });
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_field_value(raw)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The terms, in canonical order.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The field names the selector refers to (possibly repeated).
    pub fn fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether an object matches; `get` returns the object's value for a field name, and a
    /// `None` counts as the empty string.
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| r.matches(get(&r.field).as_deref().unwrap_or("")))
    }

    /// Whether the selector has no terms (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The name when the selector is exactly `metadata.name=X` (or `==`), else `None`.
    pub fn single_name(&self) -> Option<&str> {
        match self.requirements.as_slice() {
            [r] if r.field == "metadata.name" && r.operator == FieldOperator::Equals => Some(&r.value),
            _ => None,
        }
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_comma_separated(f, &self.requirements)
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Escapes `\`, `,` and `=` in a field selector value (apimachinery `fields.EscapeValue`).
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits on commas not preceded by a backslash escape; escapes stay in the terms.
fn split_field_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each position).
fn split_field_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in
            [("!=", FieldOperator::NotEquals), ("==", FieldOperator::Equals), ("=", FieldOperator::Equals)]
        {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// Undoes [`escape_field_value`]; rejects unknown escapes and unescaped `,`/`=`.
fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::FieldEscape(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::FieldUnescaped(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::FieldEscape("\\".to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metav1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ls(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn ls_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} parsed as {sel}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn label_parse_canonical_strings() {
        let cases = [
            ("", ""),
            ("   ", ""),
            ("x=a", "x=a"),
            ("x==a", "x==a"),
            ("x!=a", "x!=a"),
            (" x = a ", "x=a"),
            ("x in (b,a)", "x in (a,b)"),
            ("x in (a, a ,b)", "x in (a,b)"),
            ("x notin (a)", "x notin (a)"),
            ("x", "x"),
            ("!x", "!x"),
            ("! x", "!x"),
            ("x>1", "x>1"),
            ("x < -2", "x<-2"),
            ("z=c,x=a,y", "x=a,y,z=c"),
            ("x=a,y!=b,z in (c),w notin (d),v,!u", "!u,v,w notin (d),x=a,y!=b,z in (c)"),
            ("example.com/key=v", "example.com/key=v"),
            ("app.kubernetes.io/name in (web)", "app.kubernetes.io/name in (web)"),
            ("x=", "x="),
            ("x=,y=a", "x=,y=a"),
            ("x in ()", "x in ()"),
            ("x in (,a)", "x in (,a)"),
            ("x in (a,)", "x in (,a)"),
            ("x in (a,,b)", "x in (,a,b)"),
            ("in in (in,notin)", "in in (in,notin)"),
            ("x in(a)", "x in (a)"),
            ("\tx\n=\ra", "x=a"),
        ];
        for (input, want) in cases {
            assert_eq!(ls(input).to_string(), want, "input {input:?}");
            // Canonical strings round-trip.
            assert_eq!(ls(want).to_string(), want, "round-trip {want:?}");
        }
    }

    #[test]
    fn label_parse_requirements() {
        let sel = ls("a in (x,y),!b");
        let reqs = sel.requirements();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].key(), "a");
        assert_eq!(reqs[0].operator(), LabelOperator::In);
        assert_eq!(reqs[0].values(), ["x", "y"]);
        assert_eq!(reqs[1].key(), "b");
        assert_eq!(reqs[1].operator(), LabelOperator::DoesNotExist);
        assert!(reqs[1].values().is_empty());
        assert!(!sel.is_empty());
        assert!(ls("").is_empty());
        assert_eq!("x=a".parse::<LabelSelector>().map(|s| s.to_string()).ok().as_deref(), Some("x=a"));
    }

    #[test]
    fn label_parse_errors() {
        let cases = [
            ("x=a,", "found '', expected: identifier after ','"),
            (",x=a", "found ',', expected: !, identifier, or 'end of string'"),
            ("x=a,,y=b", "found ',', expected: identifier after ','"),
            ("x=a y=b", "found 'y', expected: ',' or 'end of string'"),
            ("x y", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"),
            ("x in a", "unable to parse requirement: found 'a' expected: '('"),
            ("x in (a", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("x in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
            ("x in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
            ("x in", "unable to parse requirement: found '' expected: '('"),
            ("x==(a)", "unable to parse requirement: found '(', expected: identifier"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("=a", "found '=', expected: !, identifier, or 'end of string'"),
            ("x>a", "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer"),
            ("x<", "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer"),
            ("(", "found '(', expected: !, identifier, or 'end of string'"),
        ];
        for (input, want) in cases {
            assert_eq!(ls_err(input), want, "input {input:?}");
        }
    }

    #[test]
    fn label_key_and_value_validation() {
        for bad_key in [
            "-x",
            "x-",
            "a/b/c",
            "/x",
            "Example.com/x",
            "example.com/",
            "ex_ample.com/x",
            &"k".repeat(64),
            &format!("{}/x", "a".repeat(254)),
        ] {
            let err = ls_err(&format!("{bad_key}=v"));
            assert!(
                err.starts_with(&format!("unable to parse requirement: invalid label key \"{bad_key}\"")),
                "key {bad_key:?}: {err}"
            );
        }
        assert!(ls_err("a/b/c").contains("a qualified name must consist of"));
        assert!(ls_err("/x").contains("prefix part must be non-empty"));
        assert!(ls_err(&"k".repeat(64)).contains("name part must be no more than 63 characters"));
        for good_key in ["x", "X_1.a-b", "example.com/My.Key", "a.b-c.d/k", &"k".repeat(63)] {
            assert_eq!(ls(good_key).to_string(), good_key);
        }
        for bad_value in ["-v", "v-", "v v2", "v/w", "é", &"v".repeat(64)] {
            let err = ls_err(&format!("k in ({bad_value})"));
            assert!(err.contains("invalid label value") || err.contains("expected"), "value {bad_value:?}: {err}");
        }
        let err = ls_err("k=-v");
        assert!(
            err.starts_with(
                "unable to parse requirement: invalid label value: \"-v\": at key: 'k': a valid label must be"
            ),
            "{err}"
        );
        assert!(ls_err(&format!("k={}", "v".repeat(64))).contains("must be no more than 63 characters"));
        for good_value in ["v", "V_1.a-b", "1", &"v".repeat(63)] {
            assert_eq!(ls(&format!("k={good_value}")).to_string(), format!("k={good_value}"));
        }
    }

    #[test]
    fn label_matching() {
        let obj = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let empty = labels(&[]);
        let cases: &[(&str, bool, bool)] = &[
            // (selector, matches obj, matches empty)
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app=db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("missing!=x", true, true),
            ("app in (db,web)", true, false),
            ("app in (db)", false, false),
            ("app notin (db)", true, true),
            ("app notin (web,db)", false, true),
            ("missing notin (x)", true, true),
            ("app", true, false),
            ("missing", false, false),
            ("!app", false, true),
            ("!missing", true, true),
            ("app=web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("app=web,!tier", false, false),
            ("n>4", true, false),
            ("n>5", false, false),
            ("n<6", true, false),
            ("app>1", false, false),
            ("missing=", false, false),
        ];
        for &(sel, want_obj, want_empty) in cases {
            let s = ls(sel);
            assert_eq!(s.matches(&obj), want_obj, "{sel:?} on obj");
            assert_eq!(s.matches(&empty), want_empty, "{sel:?} on empty");
        }
        // `k=` matches a label present with the empty value.
        assert!(ls("k=").matches(&labels(&[("k", "")])));
        assert!(ls("k in ()").matches(&labels(&[("k", "")])));
        assert!(LabelSelector::everything().matches(&obj));
    }

    #[test]
    fn label_from_k8s() {
        let sel = metav1::LabelSelector {
            match_labels: Some(
                [("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())].into_iter().collect(),
            ),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "c".into(),
                    operator: "In".into(),
                    values: Some(vec!["y".into(), "x".into()]),
                },
                LabelSelectorRequirement { key: "d".into(), operator: "NotIn".into(), values: Some(vec!["z".into()]) },
                LabelSelectorRequirement { key: "aa".into(), operator: "Exists".into(), values: None },
                LabelSelectorRequirement { key: "e".into(), operator: "DoesNotExist".into(), values: Some(vec![]) },
            ]),
        };
        let s = LabelSelector::from_k8s(&sel).unwrap();
        assert_eq!(s.to_string(), "a=1,aa,b=2,c in (x,y),d notin (z),!e");
        assert!(s.matches(&labels(&[("a", "1"), ("aa", ""), ("b", "2"), ("c", "x")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("aa", ""), ("b", "2"), ("c", "x"), ("e", "")])));
        // The string form parses back to the same selector.
        assert_eq!(ls(&s.to_string()), s);

        let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&labels(&[("x", "y")])));

        let bad_op = metav1::LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Gt".into(),
                values: Some(vec!["1".into()]),
            }]),
            ..Default::default()
        };
        assert_eq!(LabelSelector::from_k8s(&bad_op).unwrap_err(), SelectorError::UnknownOperator("Gt".into()));
        assert_eq!(
            LabelSelector::from_k8s(&bad_op).unwrap_err().to_string(),
            "\"Gt\" is not a valid label selector operator"
        );

        let in_empty = metav1::LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_k8s(&in_empty).unwrap_err().to_string(),
            "for 'in', 'notin' operators, values set can't be empty"
        );
        let exists_values = metav1::LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Exists".into(),
                values: Some(vec!["x".into()]),
            }]),
            ..Default::default()
        };
        assert!(LabelSelector::from_k8s(&exists_values).is_err());
        let bad_label = metav1::LabelSelector {
            match_labels: Some([("a".to_string(), "-x".to_string())].into_iter().collect()),
            ..Default::default()
        };
        assert!(LabelSelector::from_k8s(&bad_label)
            .unwrap_err()
            .to_string()
            .starts_with("invalid label value: \"-x\""));
    }

    #[test]
    fn label_requirement_new() {
        let r = LabelRequirement::new("k", LabelOperator::In, ["b", "a", "b"]).unwrap();
        assert_eq!(r.values(), ["a", "b"]);
        assert_eq!(r.to_string(), "k in (a,b)");
        assert!(LabelRequirement::new("k", LabelOperator::Equals, ["a", "b"]).is_err());
        assert!(LabelRequirement::new("k", LabelOperator::Equals, Vec::<String>::new()).is_err());
        let sel = LabelSelector::from_requirements(vec![
            LabelRequirement::new("z", LabelOperator::Exists, Vec::<String>::new()).unwrap(),
            r,
        ]);
        assert_eq!(sel.to_string(), "k in (a,b),z");
    }

    fn fs(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn field_parse_and_display() {
        let cases = [
            ("", ""),
            ("metadata.name=foo", "metadata.name=foo"),
            ("metadata.name==foo", "metadata.name=foo"),
            ("status.phase!=Running", "status.phase!=Running"),
            ("spec.nodeName=n1,metadata.namespace=default", "metadata.namespace=default,spec.nodeName=n1"),
            ("a=b,", "a=b"),
            (",a=b", "a=b"),
            ("a=", "a="),
            ("a==", "a="),
            ("a!=", "a!="),
            (r"a=x\,y", r"a=x\,y"),
            (r"a=x\=y", r"a=x\=y"),
            (r"a=x\\y", r"a=x\\y"),
        ];
        for (input, want) in cases {
            let sel = fs(input);
            assert_eq!(sel.to_string(), want, "input {input:?}");
            assert_eq!(fs(want), sel, "round-trip {want:?}");
        }
        let sel = fs(r"b!=x\,y\=z\\w,a==1");
        assert_eq!(
            sel.requirements(),
            [
                FieldRequirement { field: "a".into(), operator: FieldOperator::Equals, value: "1".into() },
                FieldRequirement { field: "b".into(), operator: FieldOperator::NotEquals, value: r"x,y=z\w".into() },
            ]
        );
        assert_eq!(sel.fields().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!sel.is_empty());
        assert!(fs("").is_empty());
        assert!(FieldSelector::everything().is_empty());
        assert_eq!(escape_field_value(r"a,b=c\d"), r"a\,b\=c\\d");
        // `!=` is found before `=`; the first operator position splits the term.
        assert_eq!(fs("a!=b").requirements()[0].operator, FieldOperator::NotEquals);
        assert_eq!(fs("a!=b").requirements()[0].value, "b");
        // Whitespace is not trimmed (the server then rejects the unknown field name).
        assert_eq!(fs("a =b").requirements()[0].field, "a ");
    }

    #[test]
    fn field_parse_errors() {
        let err = FieldSelector::parse("metadata.name=a,foo").unwrap_err();
        assert_eq!(err, SelectorError::FieldTerm { selector: "metadata.name=a,foo".into(), term: "foo".into() });
        assert_eq!(err.to_string(), "invalid selector: 'metadata.name=a,foo'; can't understand 'foo'");
        assert_eq!(FieldSelector::parse(r"a=b\c").unwrap_err(), SelectorError::FieldEscape(r"\c".into()));
        assert_eq!(
            FieldSelector::parse(r"a=b\c").unwrap_err().to_string(),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(FieldSelector::parse(r"a=b\").unwrap_err(), SelectorError::FieldEscape(r"\".into()));
        assert_eq!(FieldSelector::parse("a=b=c").unwrap_err(), SelectorError::FieldUnescaped('='));
        assert_eq!(FieldSelector::parse("a===c").unwrap_err(), SelectorError::FieldUnescaped('='));
        assert!(FieldSelector::parse("abc").is_err());
        assert!("a".parse::<FieldSelector>().is_err());
    }

    #[test]
    fn field_matching() {
        let obj = |f: &str| -> Option<String> {
            match f {
                "metadata.name" => Some("web-1".into()),
                "spec.nodeName" => Some("node,1".into()),
                "status.phase" => Some("Running".into()),
                _ => None,
            }
        };
        let cases = [
            ("", true),
            ("metadata.name=web-1", true),
            ("metadata.name==web-1", true),
            ("metadata.name=web-2", false),
            ("metadata.name!=web-2", true),
            ("metadata.name!=web-1", false),
            (r"spec.nodeName=node\,1", true),
            ("status.phase=Running,metadata.name=web-1", true),
            ("status.phase=Running,metadata.name=web-2", false),
            // A missing field reads as "".
            ("spec.missing=", true),
            ("spec.missing!=", false),
            ("spec.missing=x", false),
            ("spec.missing!=x", true),
        ];
        for (sel, want) in cases {
            assert_eq!(fs(sel).matches(&obj), want, "{sel:?}");
        }
    }

    #[test]
    fn field_single_name() {
        assert_eq!(fs("metadata.name=foo").single_name(), Some("foo"));
        assert_eq!(fs("metadata.name==foo").single_name(), Some("foo"));
        assert_eq!(fs(r"metadata.name=a\,b").single_name(), Some("a,b"));
        assert_eq!(fs("metadata.name!=foo").single_name(), None);
        assert_eq!(fs("metadata.namespace=foo").single_name(), None);
        assert_eq!(fs("metadata.name=foo,metadata.namespace=bar").single_name(), None);
        assert_eq!(fs("").single_name(), None);
    }
}
