//! A small OTTL grammar: editor calls with an optional `where` clause.
//!
//! ```text
//! statement  = call [ "where" condition ]
//! call       = IDENT "(" [ expr { "," expr } ] ")"
//! expr       = path | STRING | INT | FLOAT | "true" | "false" | "nil" | "[" [ expr { "," expr } ] "]" | call
//! path       = IDENT { "." IDENT } { "[" STRING "]" }
//! condition  = and { "or" and }
//! and        = unary { "and" unary }
//! unary      = "not" unary | "(" condition ")" | expr [ ("==" | "!=") expr ]
//! ```
//!
//! Columns in errors are 1-based character positions in the statement.

/// A parse error at a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a.b["k"]`.
    Path(Path),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// `[a, b]`.
    List(Vec<Expr>),
    /// A converter call, e.g. `SHA256(x)`.
    Call(Call),
}

/// A path: dotted names, then `["key"]` indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// `resource`, `attributes`, …
    pub parts: Vec<String>,
    /// The `["key"]` indexes.
    pub keys: Vec<String>,
    /// Where it starts.
    pub column: usize,
}

/// A function call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Its name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<Expr>,
    /// Where the name starts.
    pub column: usize,
}

/// A `where` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `a or b`.
    Or(Box<Cond>, Box<Cond>),
    /// `a and b`.
    And(Box<Cond>, Box<Cond>),
    /// `not a`.
    Not(Box<Cond>),
    /// `a == b` (`true`) or `a != b` (`false`).
    Cmp(Expr, bool, Expr),
    /// A value used as a condition (`true`, `IsMatch(…)`).
    Value(Expr),
}

/// A statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The editor call.
    pub call: Call,
    /// The `where` clause.
    pub condition: Option<Cond>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Eq,
    Ne,
    End,
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    let err = |column: usize, message: String| ParseError { column, message };
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' | ')' | '[' | ']' | ',' | '.' => {
                out.push((
                    match c {
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        '[' => Tok::LBracket,
                        ']' => Tok::RBracket,
                        ',' => Tok::Comma,
                        _ => Tok::Dot,
                    },
                    col,
                ));
                i += 1;
            }
            '=' | '!' => {
                if chars.get(i + 1) != Some(&'=') {
                    return Err(err(col, format!("expected `{c}=`")));
                }
                out.push((if c == '=' { Tok::Eq } else { Tok::Ne }, col));
                i += 2;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(col, "unterminated string".into())),
                        Some('"') => break,
                        Some('\\') => {
                            let escaped = chars
                                .get(i + 1)
                                .ok_or_else(|| err(col, "unterminated string".into()))?;
                            s.push(match escaped {
                                'n' => '\n',
                                't' => '\t',
                                other => *other,
                            });
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Str(s), col));
                i += 1;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || chars[i] == '.'
                        || chars[i] == 'e'
                        || chars[i] == 'E')
                {
                    i += 1;
                }
                let lit: String = chars[start..i].iter().collect();
                let tok = match lit.parse::<i64>() {
                    Ok(n) => Tok::Int(n),
                    Err(_) => Tok::Float(
                        lit.parse()
                            .map_err(|_| err(col, format!("invalid number `{lit}`")))?,
                    ),
                };
                out.push((tok, col));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push((Tok::Ident(chars[start..i].iter().collect()), col));
            }
            other => return Err(err(col, format!("unexpected character `{other}`"))),
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }
    fn col(&self) -> usize {
        self.toks[self.at].1
    }
    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            column: self.col(),
            message: message.into(),
        })
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == t {
            self.next();
            Ok(())
        } else {
            self.fail(format!("expected {what}"))
        }
    }
    fn is_keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == k)
    }

    fn call(&mut self, name: String, column: usize) -> Result<Call, ParseError> {
        self.expect(Tok::LParen, "`(`")?;
        let mut args = vec![];
        if *self.peek() != Tok::RParen {
            loop {
                args.push(self.expr()?);
                if *self.peek() == Tok::Comma {
                    self.next();
                } else {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, "`,` or `)`")?;
        Ok(Call { name, args, column })
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let (tok, col) = self.next();
        Ok(match tok {
            Tok::Str(s) => Expr::Str(s),
            Tok::Int(i) => Expr::Int(i),
            Tok::Float(f) => Expr::Float(f),
            Tok::LBracket => {
                let mut items = vec![];
                if *self.peek() != Tok::RBracket {
                    loop {
                        items.push(self.expr()?);
                        if *self.peek() == Tok::Comma {
                            self.next();
                        } else {
                            break;
                        }
                    }
                }
                self.expect(Tok::RBracket, "`,` or `]`")?;
                Expr::List(items)
            }
            Tok::Ident(name) => match name.as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "nil" => Expr::Nil,
                _ if *self.peek() == Tok::LParen => Expr::Call(self.call(name, col)?),
                _ => {
                    let mut parts = vec![name];
                    while *self.peek() == Tok::Dot {
                        self.next();
                        match self.next() {
                            (Tok::Ident(p), _) => parts.push(p),
                            (_, c) => {
                                return Err(ParseError {
                                    column: c,
                                    message: "expected a name after `.`".into(),
                                })
                            }
                        }
                    }
                    let mut keys = vec![];
                    while *self.peek() == Tok::LBracket {
                        self.next();
                        match self.next() {
                            (Tok::Str(k), _) => keys.push(k),
                            (_, c) => {
                                return Err(ParseError {
                                    column: c,
                                    message: "expected a string key inside `[ ]`".into(),
                                })
                            }
                        }
                        self.expect(Tok::RBracket, "`]`")?;
                    }
                    Expr::Path(Path {
                        parts,
                        keys,
                        column: col,
                    })
                }
            },
            Tok::End => {
                return Err(ParseError {
                    column: col,
                    message: "unexpected end of statement".into(),
                })
            }
            other => {
                return Err(ParseError {
                    column: col,
                    message: format!("unexpected {}", describe(&other)),
                })
            }
        })
    }

    fn condition(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.and()?;
        while self.is_keyword("or") {
            self.next();
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.unary()?;
        while self.is_keyword("and") {
            self.next();
            left = Cond::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Cond, ParseError> {
        if self.is_keyword("not") {
            self.next();
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if *self.peek() == Tok::LParen {
            self.next();
            let c = self.condition()?;
            self.expect(Tok::RParen, "`)`")?;
            return Ok(c);
        }
        let left = self.expr()?;
        match self.peek() {
            Tok::Eq | Tok::Ne => {
                let eq = *self.peek() == Tok::Eq;
                self.next();
                Ok(Cond::Cmp(left, eq, self.expr()?))
            }
            _ => Ok(Cond::Value(left)),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Int(i) => format!("number {i}"),
        Tok::Float(f) => format!("number {f}"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Dot => "`.`".into(),
        Tok::Eq => "`==`".into(),
        Tok::Ne => "`!=`".into(),
        Tok::End => "end of statement".into(),
    }
}

/// Parses a bare condition (the `conditions:` of a statement group).
pub fn condition(text: &str) -> Result<Cond, ParseError> {
    let mut p = Parser {
        toks: lex(text)?,
        at: 0,
    };
    let c = p.condition()?;
    if *p.peek() != Tok::End {
        return p.fail(format!(
            "unexpected {} after the condition",
            describe(p.peek())
        ));
    }
    Ok(c)
}

/// Parses one value expression (a path, a literal or a converter call).
pub fn expression(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: lex(text)?,
        at: 0,
    };
    let e = p.expr()?;
    if *p.peek() != Tok::End {
        return p.fail(format!("unexpected {} after the value", describe(p.peek())));
    }
    Ok(e)
}

/// Parses one statement.
pub fn statement(text: &str) -> Result<Statement, ParseError> {
    let mut p = Parser {
        toks: lex(text)?,
        at: 0,
    };
    let (tok, col) = p.next();
    let Tok::Ident(name) = tok else {
        return Err(ParseError {
            column: col,
            message: "a statement starts with a function name, e.g. set(".into(),
        });
    };
    if *p.peek() != Tok::LParen {
        return p.fail("expected `(` after the function name");
    }
    let call = p.call(name, col)?;
    let condition = if p.is_keyword("where") {
        p.next();
        Some(p.condition()?)
    } else {
        None
    };
    if *p.peek() != Tok::End {
        return p.fail(format!(
            "unexpected {} after the statement",
            describe(p.peek())
        ));
    }
    Ok(Statement { call, condition })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_resource_copy_statement() {
        let s = statement(r#"set(attributes["user"], resource.attributes["user"]) where resource.attributes["user"] != nil"#).unwrap();
        assert_eq!(s.call.name, "set");
        assert_eq!(
            s.call.args[1],
            Expr::Path(Path {
                parts: vec!["resource".into(), "attributes".into()],
                keys: vec!["user".into()],
                column: 25
            })
        );
        assert!(matches!(s.condition, Some(Cond::Cmp(_, false, Expr::Nil))));
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = statement(r#"set(attributes["x"], "unterminated)"#).unwrap_err();
        assert_eq!(
            e,
            ParseError {
                column: 22,
                message: "unterminated string".into()
            }
        );
        let e = statement(r#"set(attributes["x"] "y")"#).unwrap_err();
        assert_eq!(
            e,
            ParseError {
                column: 21,
                message: "expected `,` or `)`".into()
            }
        );
        let e = statement(r#"set(attributes[x], 1)"#).unwrap_err();
        assert_eq!(e.column, 16);
    }
}
