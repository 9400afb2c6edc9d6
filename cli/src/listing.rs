//! How `berth image ls` and `history` print their rows, as docker does: a table
//! aligned by Go's tabwriter rules (cells at least 10 wide, 3 spaces between), one
//! JSON object per line for `--format json`, or a `--format` template with docker's
//! placeholders (`{{.Tag}}`, `{{json .Size}}`, `{{json .}}`; a leading `table`
//! prints the headers and aligns the columns).

use std::collections::BTreeMap;
use std::io::Write;

/// One row: each field's text, by field name (sorted, as Go's JSON writes a map).
pub type Row = BTreeMap<&'static str, String>;

/// The fields a command's rows have, with the header docker prints for each.
pub type Fields = &'static [(&'static str, &'static str)];

enum Piece {
    Text(String),
    Field(&'static str),
    /// `{{json .Field}}`, or `{{json .}}` (the whole row) when `None`.
    Json(Option<&'static str>),
}

/// A parsed `--format`.
pub struct Template {
    table: bool,
    pieces: Vec<Piece>,
    fields: Fields,
}

impl Template {
    /// Reads `format`: `table` (or nothing) is `default_table`, `json` is one object
    /// per line, anything else a template. `\t` and `\n` in it stand for a tab and a
    /// newline, as docker reads them.
    pub fn parse(format: &str, default_table: &str, fields: Fields) -> anyhow::Result<Template> {
        let format = match format.trim() {
            "" | "table" => default_table,
            "json" => "{{json .}}",
            other => other,
        };
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, format),
        };
        let body = body.replace(r"\t", "\t").replace(r"\n", "\n");
        let field = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(f, _)| *f)
                .ok_or_else(|| {
                    let known: Vec<String> = fields.iter().map(|(f, _)| format!(".{f}")).collect();
                    anyhow::anyhow!(
                        "--format: there is no field .{name} (the fields are {})",
                        known.join(" ")
                    )
                })
        };
        let mut pieces = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            pieces.push(Piece::Text(rest[..start].to_owned()));
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| anyhow::anyhow!("--format: a {{{{ is not closed by }}}}"))?;
            let action = rest[start + 2..start + end].trim();
            let words: Vec<&str> = action.split_whitespace().collect();
            pieces.push(match words.as_slice() {
                [name] if name.starts_with('.') && name.len() > 1 => Piece::Field(field(&name[1..])?),
                ["json", "."] => Piece::Json(None),
                ["json", name] if name.starts_with('.') => Piece::Json(Some(field(&name[1..])?)),
                _ => anyhow::bail!(
                    "--format: {{{{{action}}}}} is not supported (berth reads {{{{.Field}}}}, {{{{json .Field}}}} and {{{{json .}}}})"
                ),
            });
            rest = &rest[start + end + 2..];
        }
        pieces.push(Piece::Text(rest.to_owned()));
        Ok(Template {
            table,
            pieces,
            fields,
        })
    }

    /// Writes `rows` (with the headers first, for a table) to `out`.
    pub fn write(&self, rows: &[Row], out: impl Write) -> anyhow::Result<()> {
        if !self.table {
            let mut out = out;
            for row in rows {
                writeln!(out, "{}", self.render(Some(row)))?;
            }
            return Ok(out.flush()?);
        }
        // Go's tabwriter makes a cell max(minwidth, text + padding) wide; this crate
        // max(minwidth, text) + padding: 7 here is docker's minwidth of 10.
        let mut table = tabwriter::TabWriter::new(out).minwidth(7).padding(3);
        writeln!(table, "{}", self.render(None))?;
        for row in rows {
            writeln!(table, "{}", self.render(Some(row)))?;
        }
        Ok(table.flush()?)
    }

    /// One row's line, or the header line when `row` is `None`.
    fn render(&self, row: Option<&Row>) -> String {
        let mut line = String::new();
        for piece in &self.pieces {
            match (piece, row) {
                (Piece::Text(text), _) => line.push_str(text),
                (Piece::Field(f) | Piece::Json(Some(f)), None) => line.push_str(self.header(f)),
                (Piece::Json(None), None) => {}
                (Piece::Field(f), Some(row)) => {
                    line.push_str(row.get(f).map_or("", String::as_str))
                }
                (Piece::Json(Some(f)), Some(row)) => line.push_str(&go_json(&row.get(f))),
                (Piece::Json(None), Some(row)) => line.push_str(&go_json(row)),
            }
        }
        line
    }

    fn header(&self, field: &str) -> &'static str {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map_or("", |(_, header)| header)
    }
}

/// JSON as Go's `encoding/json` writes it: `<`, `>` and `&` escaped (docker's
/// `<none>` is `\u003cnone\u003e`).
fn go_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value)
        .expect("strings serialize")
        .replace('<', r"\u003c")
        .replace('>', r"\u003e")
        .replace('&', r"\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: Fields = &[
        ("ID", "IMAGE ID"),
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
    ];
    const DEFAULT: &str = r"table {{.Repository}}\t{{.Tag}}\t{{.ID}}";

    fn rows() -> Vec<Row> {
        vec![
            Row::from([
                ("ID", "b5b49e12d9eb".into()),
                ("Repository", "me/app".into()),
                ("Tag", "v1".into()),
            ]),
            Row::from([
                ("ID", "bd0c69f6ecbf".into()),
                ("Repository", "127.0.0.1:5000/a/long-name".into()),
                ("Tag", "<none>".into()),
            ]),
        ]
    }

    fn text(format: &str) -> String {
        let mut out = Vec::new();
        Template::parse(format, DEFAULT, FIELDS)
            .unwrap()
            .write(&rows(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tables_align_as_go_tabwriter_with_dockers_settings() {
        assert_eq!(
            text("table"),
            "REPOSITORY                   TAG       IMAGE ID\n\
             me/app                       v1        b5b49e12d9eb\n\
             127.0.0.1:5000/a/long-name   <none>    bd0c69f6ecbf\n"
        );
        assert_eq!(text(""), text("table"));
    }

    #[test]
    fn templates_and_json() {
        assert_eq!(
            text("{{.Repository}}:{{.Tag}}"),
            "me/app:v1\n127.0.0.1:5000/a/long-name:<none>\n"
        );
        assert_eq!(
            text(r"{{ .ID }}\t{{json .Tag}}"),
            "b5b49e12d9eb\t\"v1\"\nbd0c69f6ecbf\t\"\\u003cnone\\u003e\"\n"
        );
        assert_eq!(
            text("json").lines().next().unwrap(),
            r#"{"ID":"b5b49e12d9eb","Repository":"me/app","Tag":"v1"}"#
        );
        assert_eq!(text(r"table {{.Tag}}"), "TAG\nv1\n<none>\n");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let err = |f| {
            Template::parse(f, DEFAULT, FIELDS)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(
            err("{{.Nope}}").contains("no field .Nope"),
            "{}",
            err("{{.Nope}}")
        );
        assert!(err("{{.Tag").contains("not closed"));
        assert!(err("{{range .}}x{{end}}").contains("not supported"));
        assert!(err("{{.}}").contains("not supported"));
        assert!(err("{{printf \"%s\" .Tag}}").contains("not supported"));
    }
}
