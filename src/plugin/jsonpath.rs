//! kubectl's JSONPath templates (`-o jsonpath=...`) and custom columns
//! (`-o custom-columns=...`), the subset kubectl documents: text and
//! `{...}` actions; fields (`.a.b`, `['a.b']`, `\.` to escape a dot),
//! `$` and `@`, `[*]`, `[n]` (negative from the end), `[start:end:step]`,
//! `..name` (recursive descent), filters `[?(@.a == "x")]` (`==`, `!=`,
//! `<`, `<=`, `>`, `>=`, or a bare path for "present"), `range`/`end`, and
//! quoted text (`{"\n"}`). Unions (`[a,b]`) are not supported.
//!
//! As kubectl does by default (`--allow-missing-template-keys`), a path
//! that matches nothing prints nothing; several matches print separated by
//! spaces; strings print as they are, other values as JSON.

use serde_json::Value;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum JsonPathError {
    #[error("invalid jsonpath template {template:?}: {message}")]
    Template { template: String, message: String },
    #[error("invalid custom-columns {spec:?}: {message}")]
    Columns { spec: String, message: String },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Path),
    Range(Path, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
struct Path {
    /// `$`: from the document; otherwise from the current object (the
    /// document, or the element of the enclosing `range`).
    from_root: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>, i64),
    /// `..name`: every `name` field at any depth; `..*` every value.
    Descend(Option<String>),
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Path,
    compare: Option<(Op, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Template {
    /// Parses a template such as `{range .items[*]}{.metadata.name}{"\n"}{end}`.
    pub fn parse(source: &str) -> Result<Template, JsonPathError> {
        let error = |message: String| JsonPathError::Template {
            template: source.to_string(),
            message,
        };
        // Open ranges, innermost last, each with the nodes parsed so far.
        let mut stack: Vec<(Option<Path>, Vec<Node>)> = vec![(None, Vec::new())];
        let mut rest = source;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                push(&mut stack, Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                push(&mut stack, Node::Text(rest[..open].to_string()));
            }
            let close = action_end(&rest[open..])
                .ok_or_else(|| error(format!("unclosed action at {:?}", &rest[open..])))?;
            let action = rest[open + 1..open + close].trim();
            rest = &rest[open + close + 1..];
            if action == "end" {
                let (path, nodes) = match stack.pop() {
                    Some((Some(path), nodes)) => (path, nodes),
                    _ => return Err(error("{end} without {range}".into())),
                };
                push(&mut stack, Node::Range(path, nodes));
            } else if let Some(path) = action.strip_prefix("range ") {
                let path = parse_path(path.trim()).map_err(error)?;
                stack.push((Some(path), Vec::new()));
            } else if action.starts_with('"') {
                push(&mut stack, Node::Text(unquote(action).map_err(error)?));
            } else if action.is_empty() {
                return Err(error("empty action {}".into()));
            } else {
                push(&mut stack, Node::Path(parse_path(action).map_err(error)?));
            }
        }
        if stack.len() > 1 {
            return Err(error("{range} without {end}".into()));
        }
        let (_, nodes) = stack.pop().expect("the top level");
        Ok(Template {
            source: source.to_string(),
            nodes,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The template applied to `document`.
    pub fn render(&self, document: &Value) -> String {
        let mut out = String::new();
        render(&self.nodes, document, document, &mut out);
        out
    }
}

fn push(stack: &mut [(Option<Path>, Vec<Node>)], node: Node) {
    stack.last_mut().expect("the top level").1.push(node);
}

/// Index of the `}` closing the action that `text` starts with (`{`),
/// skipping quoted text.
fn action_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            (None, _) => {}
        }
    }
    None
}

/// `"text"` with `\n`, `\t`, `\"` and `\\` escapes.
fn unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .ok_or_else(|| format!("unterminated text {quoted}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => return Err(format!("text ends in a backslash: {quoted}")),
        }
    }
    Ok(out)
}

fn parse_path(text: &str) -> Result<Path, String> {
    let mut chars: Vec<char> = text.chars().collect();
    let mut from_root = false;
    let mut i = 0;
    match chars.first() {
        Some('$') => {
            from_root = true;
            i = 1;
        }
        Some('@') => i = 1,
        _ => {}
    }
    // A path may be written without its leading dot (`metadata.name`).
    if i == 0 && chars.first().is_some_and(|c| *c != '.' && *c != '[') {
        chars.insert(0, '.');
    }
    let mut steps = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                let (name, next) = name_at(&chars, i + 2);
                steps.push(Step::Descend(
                    (name != "*").then_some(name).filter(|n| !n.is_empty()),
                ));
                i = next;
            }
            '.' => {
                let (name, next) = name_at(&chars, i + 1);
                match name.as_str() {
                    "" if next >= chars.len() => {} // `.` or `{.}`: the object itself
                    "" => return Err(format!("empty field name in {text:?}")),
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(name)),
                }
                i = next;
            }
            '[' => {
                let close =
                    bracket_end(&chars, i).ok_or_else(|| format!("unclosed [ in {text:?}"))?;
                let inside: String = chars[i + 1..close].iter().collect();
                steps.push(parse_bracket(inside.trim())?);
                i = close + 1;
            }
            c => return Err(format!("unexpected {c:?} in {text:?}")),
        }
    }
    Ok(Path { from_root, steps })
}

/// A field name starting at `start`, up to the next unescaped `.` or `[`.
fn name_at(chars: &[char], start: usize) -> (String, usize) {
    let mut name = String::new();
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1) == Some(&'.') => {
                name.push('.');
                i += 2;
            }
            '.' | '[' => break,
            c => {
                name.push(c);
                i += 1;
            }
        }
    }
    (name, i)
}

/// Index of the `]` closing the `[` at `open`, skipping quoted text and
/// nested brackets (in filters).
fn bracket_end(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if *c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(*c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_bracket(inside: &str) -> Result<Step, String> {
    if inside == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(filter) = inside.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        return parse_filter(filter.trim()).map(|f| Step::Filter(Box::new(f)));
    }
    if let Some(name) = quoted(inside) {
        return Ok(Step::Field(name));
    }
    if inside.contains(',') {
        return Err(format!("unions ([{inside}]) are not supported"));
    }
    if inside.contains(':') {
        let parts: Vec<&str> = inside.split(':').collect();
        if parts.len() > 3 {
            return Err(format!("bad slice [{inside}]"));
        }
        let number = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse()
                    .map(Some)
                    .map_err(|_| format!("bad slice [{inside}]"))
            }
        };
        let step = match parts.get(2) {
            Some(s) => number(s)?.unwrap_or(1),
            None => 1,
        };
        if step <= 0 {
            return Err(format!("slice step must be positive: [{inside}]"));
        }
        return Ok(Step::Slice(number(parts[0])?, number(parts[1])?, step));
    }
    inside
        .parse()
        .map(Step::Index)
        .map_err(|_| format!("bad subscript [{inside}]"))
}

/// `'text'` or `"text"`, without the quotes.
fn quoted(text: &str) -> Option<String> {
    ['\'', '"'].iter().find_map(|q| {
        text.strip_prefix(*q)
            .and_then(|t| t.strip_suffix(*q))
            .filter(|t| !t.contains(*q))
            .map(str::to_string)
    })
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    const OPS: [(&str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let found = OPS
        .iter()
        .filter_map(|(token, op)| text.find(token).map(|at| (at, *token, *op)))
        .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())));
    let Some((at, token, op)) = found else {
        return Ok(Filter {
            path: parse_path(text)?,
            compare: None,
        });
    };
    let path = parse_path(text[..at].trim())?;
    let literal = text[at + token.len()..].trim();
    let value = match quoted(literal) {
        Some(s) => Value::String(s),
        None => serde_json::from_str(literal)
            .map_err(|_| format!("bad value {literal:?} in filter {text:?}"))?,
    };
    Ok(Filter {
        path,
        compare: Some((op, value)),
    })
}

fn render(nodes: &[Node], root: &Value, current: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Path(path) => {
                let texts: Vec<String> =
                    select(path, root, current).into_iter().map(text).collect();
                out.push_str(&texts.join(" "));
            }
            Node::Range(path, body) => {
                for item in select(path, root, current) {
                    // A range over a list iterates its elements.
                    match item {
                        Value::Array(items) => {
                            items.iter().for_each(|i| render(body, root, i, out));
                        }
                        _ => render(body, root, item, out),
                    }
                }
            }
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn select<'a>(path: &Path, root: &'a Value, current: &'a Value) -> Vec<&'a Value> {
    let start = if path.from_root { root } else { current };
    let mut values = vec![start];
    for step in &path.steps {
        values = values
            .into_iter()
            .flat_map(|v| apply(step, root, v))
            .collect();
    }
    values
}

fn apply<'a>(step: &Step, root: &'a Value, value: &'a Value) -> Vec<&'a Value> {
    match (step, value) {
        (Step::Field(name), Value::Object(map)) => map.get(name).into_iter().collect(),
        (Step::Wildcard, Value::Object(map)) => map.values().collect(),
        (Step::Wildcard, Value::Array(items)) => items.iter().collect(),
        (Step::Index(index), Value::Array(items)) => {
            let at = if *index < 0 {
                items.len() as i64 + index
            } else {
                *index
            };
            usize::try_from(at)
                .ok()
                .and_then(|at| items.get(at))
                .into_iter()
                .collect()
        }
        (Step::Slice(start, end, step), Value::Array(items)) => {
            let len = items.len() as i64;
            let clamp = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
            let from = clamp(start.unwrap_or(0));
            let to = clamp(end.unwrap_or(len));
            (from..to)
                .step_by(*step as usize)
                .filter_map(|i| items.get(i as usize))
                .collect()
        }
        (Step::Descend(name), _) => {
            let mut found = Vec::new();
            descend(name.as_deref(), value, &mut found);
            found
        }
        (Step::Filter(filter), Value::Array(items)) => items
            .iter()
            .filter(|item| matches(filter, root, item))
            .collect(),
        _ => Vec::new(),
    }
}

fn descend<'a>(name: Option<&str>, value: &'a Value, found: &mut Vec<&'a Value>) {
    let children: Vec<&Value> = match value {
        Value::Object(map) => {
            if let Some(name) = name
                && let Some(hit) = map.get(name)
            {
                found.push(hit);
            }
            map.values().collect()
        }
        Value::Array(items) => items.iter().collect(),
        _ => return,
    };
    for child in children {
        if name.is_none() {
            found.push(child);
        }
        descend(name, child, found);
    }
}

fn matches(filter: &Filter, root: &Value, item: &Value) -> bool {
    let values = select(&filter.path, root, item);
    match &filter.compare {
        None => values
            .iter()
            .any(|v| !matches!(v, Value::Null | Value::Bool(false))),
        Some((op, literal)) => values.iter().any(|v| compare(v, *op, literal)),
    }
}

fn compare(value: &Value, op: Op, literal: &Value) -> bool {
    let ordering = match (value, literal) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match op {
        Op::Eq => ordering.map_or(value == literal, |o| o.is_eq()),
        Op::Ne => ordering.map_or(value != literal, |o| o.is_ne()),
        Op::Lt => ordering.is_some_and(|o| o.is_lt()),
        Op::Le => ordering.is_some_and(|o| o.is_le()),
        Op::Gt => ordering.is_some_and(|o| o.is_gt()),
        Op::Ge => ordering.is_some_and(|o| o.is_ge()),
    }
}

/// `-o custom-columns=NAME:.metadata.name,STATE:.status.state`: one
/// column per `HEADER:path` (the path with or without braces).
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    columns: Vec<(String, Template)>,
}

impl Columns {
    pub fn parse(spec: &str) -> Result<Columns, JsonPathError> {
        let error = |message: String| JsonPathError::Columns {
            spec: spec.to_string(),
            message,
        };
        let columns = spec
            .split(',')
            .map(|column| {
                let (header, path) = column
                    .split_once(':')
                    .ok_or_else(|| error(format!("{column:?} is not HEADER:path")))?;
                let path = path.trim();
                if header.is_empty() || path.is_empty() {
                    return Err(error(format!("{column:?} is not HEADER:path")));
                }
                let template = if path.starts_with('{') {
                    path.to_string()
                } else {
                    format!("{{{path}}}")
                };
                let template = Template::parse(&template).map_err(|e| error(e.to_string()))?;
                Ok((header.to_string(), template))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Columns { columns })
    }

    pub fn headers(&self) -> Vec<&str> {
        self.columns.iter().map(|(h, _)| h.as_str()).collect()
    }

    /// One row: each column's matches joined by commas, `<none>` for none.
    pub fn row(&self, item: &Value) -> Vec<String> {
        self.columns
            .iter()
            .map(|(_, template)| {
                let texts: Vec<String> = template
                    .nodes
                    .iter()
                    .filter_map(|node| match node {
                        Node::Path(path) => Some(select(path, item, item)),
                        _ => None,
                    })
                    .flatten()
                    .map(text)
                    .collect();
                if texts.is_empty() {
                    "<none>".to_string()
                } else {
                    texts.join(",")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The input of kubectl's JSONPath documentation.
    fn doc() -> Value {
        json!({
          "kind": "List",
          "items": [
            { "kind": "None",
              "metadata": { "name": "127.0.0.1", "labels": { "kubernetes.io/hostname": "127.0.0.1" } },
              "status": { "capacity": { "cpu": "4" },
                          "addresses": [{ "type": "LegacyHostIP", "address": "127.0.0.1" }] } },
            { "kind": "None",
              "metadata": { "name": "127.0.0.2" },
              "status": { "capacity": { "cpu": "8" },
                          "addresses": [{ "type": "LegacyHostIP", "address": "127.0.0.2" },
                                        { "type": "another", "address": "127.0.0.3" }] } }
          ],
          "users": [
            { "name": "myself", "user": {} },
            { "name": "e2e", "user": { "username": "admin", "password": "secret" } }
          ]
        })
    }

    fn render(template: &str) -> String {
        Template::parse(template)
            .unwrap_or_else(|e| panic!("{e}"))
            .render(&doc())
    }

    #[test]
    fn kubectl_documented_examples() {
        let cases = [
            ("kind is {.kind}", "kind is List"),
            ("{.kind}", "List"),
            ("{['kind']}", "List"),
            ("{$.kind}", "List"),
            ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
            ("{.users[0].name}", "myself"),
            ("{.users[-1].name}", "e2e"),
            ("{.users[0:1].name}", "myself"),
            ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
            ("{.users[?(@.name==\"e2e\")].user.password}", "secret"),
            (
                "{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
                "[127.0.0.1, {\"cpu\":\"4\"}] [127.0.0.2, {\"cpu\":\"8\"}] ",
            ),
            (
                "{.items[0].metadata.labels.kubernetes\\.io/hostname}",
                "127.0.0.1",
            ),
            (
                "{.items[0].metadata.labels['kubernetes.io/hostname']}",
                "127.0.0.1",
            ),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template), expected, "{template}");
        }
    }

    #[test]
    fn range_with_quoted_text_prints_one_line_per_item() {
        assert_eq!(
            render(r#"{range .items[*]}{.metadata.name}{"\t"}{.status.capacity.cpu}{"\n"}{end}"#),
            "127.0.0.1\t4\n127.0.0.2\t8\n"
        );
        // Nested: each item's addresses.
        assert_eq!(
            render(r#"{range .items[*]}{range .status.addresses[*]}{.address} {end}{end}"#),
            "127.0.0.1 127.0.0.2 127.0.0.3 "
        );
    }

    #[test]
    fn filters_compare_strings_and_numbers() {
        let doc = json!({ "items": [
            { "name": "a", "n": 1, "ready": true },
            { "name": "b", "n": 2, "ready": false },
            { "name": "c", "n": 3 },
        ]});
        let cases = [
            ("{.items[?(@.n > 1)].name}", "b c"),
            ("{.items[?(@.n<=2)].name}", "a b"),
            ("{.items[?(@.name != 'b')].name}", "a c"),
            ("{.items[?(@.ready)].name}", "a"),
            ("{.items[?(@.ready==false)].name}", "b"),
        ];
        for (template, expected) in cases {
            let rendered = Template::parse(template).unwrap().render(&doc);
            assert_eq!(rendered, expected, "{template}");
        }
    }

    #[test]
    fn missing_fields_print_nothing() {
        assert_eq!(render("{.items[*].metadata.uid}"), "");
        assert_eq!(render("<{.nothing.here}>"), "<>");
        assert_eq!(render("{.users[7].name}"), "");
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "{.items[*]",
            "{range .items[*]}{.kind}",
            "{end}",
            "{.items[a]}",
            "{.items['a','b']}",
            "{}",
            "{.users[?(@.name==nope)].name}",
            r#"{"unterminated}"#,
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn custom_columns_take_kubectl_specs() {
        let columns =
            Columns::parse("NAME:.metadata.name,CPU:{.status.capacity.cpu},ADDRESSES:.status.addresses[*].address,UID:.metadata.uid")
                .unwrap();
        assert_eq!(columns.headers(), ["NAME", "CPU", "ADDRESSES", "UID"]);
        let doc = doc();
        assert_eq!(
            columns.row(&doc["items"][1]),
            ["127.0.0.2", "8", "127.0.0.2,127.0.0.3", "<none>"]
        );
        for bad in ["NAME", "NAME:", ":.a", "NAME:.a[", ""] {
            assert!(Columns::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
