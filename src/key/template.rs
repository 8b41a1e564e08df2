//! The subset of Go's `text/template` that drone-cache keys use.
//!
//! Supported: text, `{{ .Field.Path }}`, function calls with string, number and
//! field arguments, parentheses, pipelines (`{{ .Commit.Branch | checksum }}`
//! passes the value as the last argument, as Go does), `{{- -}}` trimming and
//! `{{/* comments */}}`. Control flow (`if`, `range`, variables) is rejected
//! with a message rather than half-supported. Parsing checks every field and
//! function name, so a typo fails when the settings are read, not mid-build.

use std::fmt;

use super::functions::Function;
use super::metadata;

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
}

/// `cmd | cmd | ...`
#[derive(Clone, Debug, PartialEq)]
struct Pipeline(Vec<Command>);

#[derive(Clone, Debug, PartialEq)]
enum Command {
    Call(Function, Vec<Operand>),
    Value(Operand),
}

#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Field(&'static metadata::Field),
    Literal(String),
    Nested(Box<Pipeline>),
}

#[derive(Debug, PartialEq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What rendering needs from the outside world.
pub trait Context {
    /// The value of a metadata field, or an error saying which variable is unset.
    fn field(&self, field: &metadata::Field) -> Result<String, String>;
    fn call(&self, function: Function, args: &[String]) -> Result<String, String>;
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        let mut nodes = Vec::new();
        let mut rest = source;
        let mut trim_next_text = false;
        while !rest.is_empty() {
            let (text, action) = match rest.find("{{") {
                Some(start) => (&rest[..start], Some(&rest[start + 2..])),
                None => (rest, None),
            };
            let mut text = text.to_string();
            if trim_next_text {
                text = text.trim_start().to_string();
            }
            let Some(after_open) = action else {
                push_text(&mut nodes, text);
                break;
            };
            let (trim_before, body_start) = match after_open.strip_prefix("- ") {
                Some(b) => (true, b),
                None => (false, after_open),
            };
            if trim_before {
                text = text.trim_end().to_string();
            }
            push_text(&mut nodes, text);
            let close = body_start
                .find("}}")
                .ok_or_else(|| ParseError("'{{' is never closed with '}}'".into()))?;
            let mut body = &body_start[..close];
            trim_next_text = false;
            if let Some(b) = body.strip_suffix(" -") {
                body = b;
                trim_next_text = true;
            }
            rest = &body_start[close + 2..];
            let body = body.trim();
            if body.starts_with("/*") && body.ends_with("*/") {
                continue;
            }
            nodes.push(Node::Action(parse_action(body)?));
        }
        Ok(Template { nodes })
    }

    pub fn render(&self, ctx: &dyn Context) -> Result<String, String> {
        let mut out = String::new();
        for node in &self.nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => out.push_str(&eval_pipeline(p, ctx)?),
            }
        }
        Ok(out)
    }
}

fn push_text(nodes: &mut Vec<Node>, text: String) {
    if !text.is_empty() {
        nodes.push(Node::Text(text));
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Field(String),
    Ident(String),
    Str(String),
    Number(String),
    Pipe,
    Open,
    Close,
}

fn parse_action(body: &str) -> Result<Pipeline, ParseError> {
    if body.is_empty() {
        return Err(ParseError("empty action '{{ }}'".into()));
    }
    let tokens = tokenize(body)?;
    let mut pos = 0;
    let pipeline = parse_pipeline(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(ParseError(format!("unexpected ')' in '{{{{ {body} }}}}'")));
    }
    Ok(pipeline)
}

/// Deepest parenthesis nesting accepted. Parsing and rendering recurse once
/// per level, so an unbounded depth (20,000 `(`) would overflow the stack;
/// no real key needs more than a few levels.
const MAX_NESTING: usize = 32;

fn tokenize(body: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ParseError(format!(
                        "parentheses are nested more than {MAX_NESTING} deep"
                    )));
                }
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                depth = depth.saturating_sub(1);
                tokens.push(Token::Close);
                i += 1;
            }
            '"' => {
                let (s, next) = quoted(&chars, i)?;
                tokens.push(Token::Str(s));
                i = next;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| ParseError("unterminated raw string `...`".into()))?;
                tokens.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '$' => {
                return Err(ParseError(
                    "template variables ($x) are not supported in keys".into(),
                ));
            }
            '.' => {
                let end = word_end(&chars, i + 1, |c| {
                    c.is_alphanumeric() || c == '_' || c == '.'
                });
                let path: String = chars[i..end].iter().collect();
                if path == "." {
                    return Err(ParseError(
                        "'{{ . }}' is not supported; name a field such as .Commit.Branch".into(),
                    ));
                }
                tokens.push(Token::Field(path));
                i = end;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let end = word_end(&chars, i + 1, |c| c.is_ascii_alphanumeric() || c == '.');
                tokens.push(Token::Number(chars[i..end].iter().collect()));
                i = end;
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = word_end(&chars, i, |c| c.is_alphanumeric() || c == '_');
                tokens.push(Token::Ident(chars[i..end].iter().collect()));
                i = end;
            }
            other => {
                return Err(ParseError(format!(
                    "unexpected character '{other}' in '{{{{ {body} }}}}'"
                )));
            }
        }
    }
    Ok(tokens)
}

fn word_end(chars: &[char], start: usize, accept: impl Fn(char) -> bool) -> usize {
    let mut end = start;
    while end < chars.len() && accept(chars[end]) {
        end += 1;
    }
    end
}

/// A Go interpreted string literal starting at `chars[start] == '"'`.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((out, i + 1)),
            '\\' if i + 1 < chars.len() => {
                out.push(match chars[i + 1] {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(ParseError("unterminated string \"...\"".into()))
}

fn parse_pipeline(tokens: &[Token], pos: &mut usize) -> Result<Pipeline, ParseError> {
    let mut commands = vec![parse_command(tokens, pos)?];
    while tokens.get(*pos) == Some(&Token::Pipe) {
        *pos += 1;
        commands.push(parse_command(tokens, pos)?);
    }
    for (index, command) in commands.iter().enumerate().skip(1) {
        if let Command::Value(_) = command {
            return Err(ParseError(format!(
                "stage {} of a pipeline must be a function, not a value",
                index + 1
            )));
        }
    }
    check_arity(&commands)?;
    Ok(Pipeline(commands))
}

fn parse_command(tokens: &[Token], pos: &mut usize) -> Result<Command, ParseError> {
    let first = tokens
        .get(*pos)
        .ok_or_else(|| ParseError("missing value after '|' or '('".into()))?;
    if let Token::Ident(name) = first {
        *pos += 1;
        let function = Function::from_name(name).ok_or_else(|| unknown_ident(name))?;
        let mut args = Vec::new();
        while let Some(operand) = parse_operand(tokens, pos)? {
            args.push(operand);
        }
        return Ok(Command::Call(function, args));
    }
    let operand = parse_operand(tokens, pos)?.ok_or_else(|| ParseError("missing value".into()))?;
    if let Some(Token::Field(_) | Token::Str(_) | Token::Number(_) | Token::Open) = tokens.get(*pos)
    {
        return Err(ParseError(
            "a value cannot take arguments; only functions can".into(),
        ));
    }
    Ok(Command::Value(operand))
}

fn parse_operand(tokens: &[Token], pos: &mut usize) -> Result<Option<Operand>, ParseError> {
    let Some(token) = tokens.get(*pos) else {
        return Ok(None);
    };
    let operand = match token {
        Token::Field(path) => {
            Operand::Field(metadata::field(path).ok_or_else(|| unknown_field(path))?)
        }
        Token::Str(s) | Token::Number(s) => Operand::Literal(s.clone()),
        Token::Open => {
            *pos += 1;
            let inner = parse_pipeline(tokens, pos)?;
            if tokens.get(*pos) != Some(&Token::Close) {
                return Err(ParseError("'(' is never closed with ')'".into()));
            }
            Operand::Nested(Box::new(inner))
        }
        // Go calls a function named as an argument with no arguments: `{{ hashFiles arch }}`.
        Token::Ident(name) => {
            let function = Function::from_name(name).ok_or_else(|| unknown_ident(name))?;
            function.check_arity(0).map_err(ParseError)?;
            Operand::Nested(Box::new(Pipeline(vec![Command::Call(
                function,
                Vec::new(),
            )])))
        }
        Token::Pipe | Token::Close => return Ok(None),
    };
    *pos += 1;
    Ok(Some(operand))
}

/// Counts each call's arguments, including the value a pipeline passes in.
fn check_arity(commands: &[Command]) -> Result<(), ParseError> {
    for (index, command) in commands.iter().enumerate() {
        if let Command::Call(function, args) = command {
            let piped = usize::from(index > 0);
            function
                .check_arity(args.len() + piped)
                .map_err(ParseError)?;
        }
    }
    Ok(())
}

fn unknown_ident(name: &str) -> ParseError {
    match name {
        "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block" => {
            ParseError(format!(
                "'{{{{ {name} }}}}' is not supported in keys; keys use fields and functions only"
            ))
        }
        _ => ParseError(format!(
            "unknown function '{name}'; available: {}",
            Function::NAMES.join(", ")
        )),
    }
}

fn unknown_field(path: &str) -> ParseError {
    let known: Vec<&str> = metadata::FIELDS.iter().map(|f| f.path).collect();
    let hint = known
        .iter()
        .map(|k| (strsim::jaro_winkler(path, k), *k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    ParseError(format!(
        "unknown field '{path}'{hint}; available: {}",
        known.join(", ")
    ))
}

fn eval_pipeline(pipeline: &Pipeline, ctx: &dyn Context) -> Result<String, String> {
    let mut value: Option<String> = None;
    for command in &pipeline.0 {
        value = Some(match command {
            Command::Value(operand) => eval_operand(operand, ctx)?,
            Command::Call(function, args) => {
                let mut values = args
                    .iter()
                    .map(|a| eval_operand(a, ctx))
                    .collect::<Result<Vec<_>, _>>()?;
                values.extend(value.take());
                ctx.call(*function, &values)?
            }
        });
    }
    Ok(value.unwrap_or_default())
}

fn eval_operand(operand: &Operand, ctx: &dyn Context) -> Result<String, String> {
    match operand {
        Operand::Field(field) => ctx.field(field),
        Operand::Literal(s) => Ok(s.clone()),
        Operand::Nested(p) => eval_pipeline(p, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;

    impl Context for Fake {
        fn field(&self, field: &metadata::Field) -> Result<String, String> {
            match field.path {
                ".Commit.Branch" => Ok("main".into()),
                ".Repo.Name" => Ok("hello".into()),
                other => Err(format!("{other} unset")),
            }
        }
        fn call(&self, function: Function, args: &[String]) -> Result<String, String> {
            Ok(format!("{}({})", function.name(), args.join(",")))
        }
    }

    fn render(source: &str) -> Result<String, String> {
        Template::parse(source)
            .map_err(|e| e.to_string())?
            .render(&Fake)
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "{{{{ {}.Commit.Branch{} }}}}",
            "(".repeat(20_000),
            ")".repeat(20_000)
        );
        let err = Template::parse(&deep).unwrap_err();
        assert!(err.0.contains("nested more than 32 deep"), "{err}");
        let ok = format!(
            "{{{{ {}.Commit.Branch{} }}}}",
            "(".repeat(32),
            ")".repeat(32)
        );
        assert_eq!(Template::parse(&ok).unwrap().render(&Fake).unwrap(), "main");
    }

    #[test]
    fn renders_text_fields_and_calls() {
        assert_eq!(render("plain").unwrap(), "plain");
        assert_eq!(
            render(r#"{{ .Repo.Name }}_{{ checksum "go.sum" }}-{{arch}}"#).unwrap(),
            "hello_checksum(go.sum)-arch()"
        );
        assert_eq!(
            render(r#"{{ hashFiles "go.mod" `go.sum` }}"#).unwrap(),
            "hashFiles(go.mod,go.sum)"
        );
    }

    #[test]
    fn pipelines_pass_the_value_last_and_parens_nest() {
        assert_eq!(
            render(r#"{{ "a.txt" | checksum }}"#).unwrap(),
            "checksum(a.txt)"
        );
        assert_eq!(
            render(r#"{{ hashFiles "x" (checksum "y") }}"#).unwrap(),
            "hashFiles(x,checksum(y))"
        );
    }

    #[test]
    fn trimming_and_comments() {
        assert_eq!(render("a  {{- .Repo.Name -}}  b").unwrap(), "ahellob");
        assert_eq!(render("a{{/* note */}}b").unwrap(), "ab");
    }

    #[test]
    fn escapes_in_strings() {
        assert_eq!(
            render(r#"{{ checksum "a\"b" }}"#).unwrap(),
            "checksum(a\"b)"
        );
    }

    #[test]
    fn rejects_unknown_names_and_bad_syntax_with_a_reason() {
        let err = |s: &str| Template::parse(s).unwrap_err().to_string();
        assert!(err("{{ .Repo.Nmae }}").contains("did you mean .Repo.Name"));
        assert!(err("{{ .Nope }}").contains("unknown field '.Nope'"));
        assert!(err("{{ sha1 \"x\" }}").contains("unknown function 'sha1'"));
        assert!(err("{{ if .Repo.Name }}x{{ end }}").contains("not supported"));
        assert!(err("{{ .Repo.Name ").contains("never closed"));
        assert!(err("{{ checksum }}").contains("checksum"));
        assert!(err("{{ checksum \"a\" \"b\" }}").contains("checksum"));
        assert!(err("{{ $x }}").contains("variables"));
        assert!(err("{{ }}").contains("empty"));
        assert!(err("{{ \"a\" | \"b\" }}").contains("must be a function"));
    }

    #[test]
    fn render_errors_propagate() {
        assert_eq!(
            render("{{ .Build.Number }}").unwrap_err(),
            ".Build.Number unset"
        );
    }
}
