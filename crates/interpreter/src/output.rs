//! The NDJSON lines `/execute` streams, and how kernel messages become them.

use serde::Serialize;
use serde_json::{Map, Value};

/// One line of an `/execute` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Stdout {
        text: String,
        timestamp: String,
    },
    Stderr {
        text: String,
        timestamp: String,
    },
    Result(Box<ResultData>),
    Error {
        name: String,
        value: String,
        traceback: String,
    },
    NumberOfExecutions {
        execution_count: u64,
    },
    /// Written while a run is silent, so a vanished client is noticed (a
    /// write fails) even when the kernel prints nothing. The SDKs skip it.
    Keepalive,
    EndOfExecution,
}

impl Line {
    pub fn error(name: &str, value: impl Into<String>) -> Self {
        Line::Error {
            name: name.to_string(),
            value: value.into(),
            traceback: String::new(),
        }
    }

    /// The line as sent: JSON and a newline.
    pub fn to_ndjson(&self) -> bytes::Bytes {
        let mut out = serde_json::to_vec(self).expect("lines serialize");
        out.push(b'\n');
        out.into()
    }
}

/// A displayed value in every form the kernel gave, under the SDKs' names.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResultData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub javascript: Option<String>,
    /// `e2b/data`: a pandas DataFrame as columns (the template registers a
    /// formatter for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// `e2b/chart`: structured chart data, when a formatter provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<Value>,
    /// MIME types the SDKs have no field for, under their MIME names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
    pub is_main_result: bool,
}

impl ResultData {
    /// From a `display_data` / `execute_result` MIME bundle. `is_main_result`
    /// is true for the cell's value (execute_result), false for display().
    pub fn from_bundle(mut bundle: Map<String, Value>, is_main_result: bool) -> Self {
        let mut text_of = |mime: &str| bundle.remove(mime).map(join_text);
        let text = text_of("text/plain").map(unquote);
        let html = text_of("text/html");
        let markdown = text_of("text/markdown");
        let svg = text_of("image/svg+xml");
        let png = text_of("image/png").map(strip_newlines);
        let jpeg = text_of("image/jpeg").map(strip_newlines);
        let pdf = text_of("application/pdf").map(strip_newlines);
        let latex = text_of("text/latex");
        let javascript = text_of("application/javascript");
        let json = bundle.remove("application/json");
        let data = bundle.remove("e2b/data");
        let chart = bundle.remove("e2b/chart");
        Self {
            text,
            html,
            markdown,
            svg,
            png,
            jpeg,
            pdf,
            latex,
            json,
            javascript,
            data,
            chart,
            extra: (!bundle.is_empty()).then_some(bundle),
            is_main_result,
        }
    }
}

/// Text MIME values may come split into a list of lines (nbformat style).
fn join_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| p.to_string())
            })
            .collect(),
        other => other.to_string(),
    }
}

/// A string's repr (`'abc'`) is shown as its content, as E2B's server does,
/// so `runCode("'abc'")` gives the text `abc`.
fn unquote(text: String) -> String {
    let quoted = text.len() >= 2
        && ((text.starts_with('\'') && text.ends_with('\''))
            || (text.starts_with('"') && text.ends_with('"')));
    if quoted {
        text[1..text.len() - 1].to_string()
    } else {
        text
    }
}

/// Base64 payloads may carry line breaks; clients decode them strictly.
fn strip_newlines(b64: String) -> String {
    if b64.contains('\n') {
        b64.chars().filter(|c| !c.is_ascii_whitespace()).collect()
    } else {
        b64
    }
}

/// A kernel's traceback is a list of blocks; clients show one string, in
/// plain text whatever colours the kernel was configured with.
pub fn join_traceback(traceback: &Value) -> String {
    let joined = match traceback {
        Value::Array(parts) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    strip_ansi(&joined)
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final` and the shorter
/// `ESC ... final` ones); a dozen lines do not justify a dependency.
fn strip_ansi(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // Parameters and intermediates, then one final byte in @..~.
            for p in chars.by_ref() {
                if ('@'..='~').contains(&p) {
                    break;
                }
            }
        } else {
            // nF escapes: intermediates in ' '..'/', then a final byte.
            while chars.next_if(|i| (' '..='/').contains(i)).is_some() {}
            chars.next();
        }
    }
    out
}

/// JJava at times reports the user's exception wrapped, as `RuntimeException`
/// with the value `"<class>, <message>"` (and its evaluator's frames for a
/// traceback); clients expect the exception itself, as it reports it the
/// other times.
fn unwrap_java(name: String, value: String) -> (String, String) {
    if name == "RuntimeException" {
        if let Some((class, message)) = value.split_once(", ") {
            let dotted = class.contains('.')
                && class.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                });
            if dotted && (class.ends_with("Exception") || class.ends_with("Error")) {
                return (class.to_string(), message.to_string());
            }
        }
    }
    (name, value)
}

/// The error a kernel reported (an `error` message or a failed reply).
pub fn kernel_error(content: &Value) -> Line {
    let field = |k: &str| {
        content
            .get(k)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let (name, value) = unwrap_java(field("ename"), field("evalue"));
    let mut traceback = content
        .get("traceback")
        .map(join_traceback)
        .unwrap_or_default();
    // A traceback that says only where the kernel was (JJava, for one,
    // sometimes gives its evaluator's frames alone) gets the error itself
    // on top, as every other kernel's does.
    if !traceback.is_empty() && !name.is_empty() && !traceback.contains(&name) {
        traceback = format!("{name}: {value}\n{traceback}");
    }
    Line::Error {
        name,
        value,
        traceback,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bundle(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn maps_every_known_mime_type_and_keeps_the_rest_as_extra() {
        let r = ResultData::from_bundle(
            bundle(json!({
                "text/plain": "<Figure>",
                "text/html": ["<b>", "x</b>"],
                "text/markdown": "# t",
                "image/svg+xml": "<svg/>",
                "image/png": "iVBO\nRw0K\n",
                "image/jpeg": "/9j/",
                "application/pdf": "JVBE",
                "text/latex": "$x$",
                "application/json": {"a": [1, 2]},
                "application/javascript": "alert(1)",
                "e2b/data": {"col": [1, 2]},
                "application/vnd.plotly.v1+json": {"data": []}
            })),
            true,
        );
        assert_eq!(r.text.as_deref(), Some("<Figure>"));
        assert_eq!(r.html.as_deref(), Some("<b>x</b>"));
        assert_eq!(r.markdown.as_deref(), Some("# t"));
        assert_eq!(r.svg.as_deref(), Some("<svg/>"));
        assert_eq!(r.png.as_deref(), Some("iVBORw0K"));
        assert_eq!(r.jpeg.as_deref(), Some("/9j/"));
        assert_eq!(r.pdf.as_deref(), Some("JVBE"));
        assert_eq!(r.latex.as_deref(), Some("$x$"));
        assert_eq!(r.json, Some(json!({"a": [1, 2]})));
        assert_eq!(r.javascript.as_deref(), Some("alert(1)"));
        assert_eq!(r.data, Some(json!({"col": [1, 2]})));
        assert!(r.is_main_result);
        let extra = r.extra.unwrap();
        assert_eq!(extra.len(), 1);
        assert!(extra.contains_key("application/vnd.plotly.v1+json"));
    }

    #[test]
    fn a_string_repr_loses_its_quotes_but_other_text_does_not() {
        let text = |t: &str| {
            ResultData::from_bundle(bundle(json!({ "text/plain": t })), true)
                .text
                .unwrap()
        };
        assert_eq!(text("'abc'"), "abc");
        assert_eq!(text("\"a'b\""), "a'b");
        assert_eq!(text("'"), "'");
        assert_eq!(text("'a"), "'a");
        assert_eq!(text("2"), "2");
    }

    #[test]
    fn lines_serialize_as_the_sdks_read_them() {
        let stdout = Line::Stdout {
            text: "hi\n".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&stdout).unwrap(),
            json!({"type": "stdout", "text": "hi\n", "timestamp": "2026-01-01T00:00:00Z"})
        );
        let result = Line::Result(Box::new(ResultData::from_bundle(
            bundle(json!({"text/plain": "2"})),
            true,
        )));
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"type": "result", "text": "2", "is_main_result": true})
        );
        assert_eq!(
            serde_json::to_value(Line::NumberOfExecutions { execution_count: 3 }).unwrap(),
            json!({"type": "number_of_executions", "execution_count": 3})
        );
        assert_eq!(
            Line::EndOfExecution.to_ndjson(),
            bytes::Bytes::from_static(b"{\"type\":\"end_of_execution\"}\n")
        );
    }

    #[test]
    fn tracebacks_lose_their_colours() {
        let tb = json!([
            "\u{1b}[31mZeroDivisionError\u{1b}[39m: x",
            "\u{1b}[1;32m----> 1\u{1b}[0m 1/0"
        ]);
        assert_eq!(join_traceback(&tb), "ZeroDivisionError: x\n----> 1 1/0");
        assert_eq!(strip_ansi("a\u{1b}(Bb"), "ab");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn a_traceback_of_frames_alone_gets_the_error_on_top() {
        let content = json!({
            "ename": "java.lang.IllegalStateException",
            "evalue": "bad value 17",
            "traceback": ["org.dflib.jjava.kernel.execution.CodeEvaluator.evalSingle(CodeEvaluator.java:145)"]
        });
        let Line::Error { traceback, .. } = kernel_error(&content) else {
            panic!("not an error line");
        };
        assert_eq!(
            traceback,
            "java.lang.IllegalStateException: bad value 17\norg.dflib.jjava.kernel.execution.CodeEvaluator.evalSingle(CodeEvaluator.java:145)"
        );
        // JJava's wrapped form is unwrapped.
        let content = json!({
            "ename": "RuntimeException",
            "evalue": "java.lang.IllegalStateException, bad value 17",
            "traceback": ["org.dflib.jjava.kernel.JavaKernel.doEval(JavaKernel.java:246)"]
        });
        let Line::Error {
            name,
            value,
            traceback,
        } = kernel_error(&content)
        else {
            panic!("not an error line");
        };
        assert_eq!(name, "java.lang.IllegalStateException");
        assert_eq!(value, "bad value 17");
        assert!(traceback.starts_with("java.lang.IllegalStateException: bad value 17\n"));
        // A RuntimeException of the user's own stays as it is.
        let content = json!({"ename": "RuntimeException", "evalue": "a, b", "traceback": []});
        let Line::Error { name, value, .. } = kernel_error(&content) else {
            panic!("not an error line");
        };
        assert_eq!(
            (name.as_str(), value.as_str()),
            ("RuntimeException", "a, b")
        );
        // One that names it already is left as the kernel wrote it.
        let content = json!({"ename": "ValueError", "evalue": "x", "traceback": ["ValueError: x"]});
        let Line::Error { traceback, .. } = kernel_error(&content) else {
            panic!("not an error line");
        };
        assert_eq!(traceback, "ValueError: x");
    }

    #[test]
    fn kernel_errors_join_their_traceback() {
        let line = kernel_error(&json!({
            "ename": "ZeroDivisionError",
            "evalue": "division by zero",
            "traceback": ["----", "Cell In[1], line 1\n----> 1 1/0", "ZeroDivisionError: division by zero"]
        }));
        assert_eq!(
            line,
            Line::Error {
                name: "ZeroDivisionError".into(),
                value: "division by zero".into(),
                traceback:
                    "----\nCell In[1], line 1\n----> 1 1/0\nZeroDivisionError: division by zero"
                        .into(),
            }
        );
        // bash_kernel's failed reply: evalue is the exit code, no traceback.
        let line = kernel_error(&json!({"status": "error", "ename": "", "evalue": "1"}));
        assert_eq!(line, Line::error("", "1"));
    }
}
