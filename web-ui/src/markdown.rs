//! README rendering: Markdown (CommonMark with tables, strikethrough, task lists) to
//! HTML, then sanitized by ammonia, so a README cannot run script, embed frames or
//! link to `javascript:` URLs.

use pulldown_cmark::{html, Options, Parser};

pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&unsafe_html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_renders() {
        let html = render("# Title\n\n*hi* `code`\n\n| a |\n|---|\n| b |\n");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<em>hi</em>"));
        assert!(html.contains("<table>"));
    }

    #[test]
    fn scripts_frames_and_javascript_links_are_removed() {
        let html = render(
            "<script>alert(1)</script>\n\n<iframe src=\"https://evil.example\"></iframe>\n\n\
             [click](javascript:alert(2)) <a href=\"javascript:alert(3)\">x</a> \
             <img src=x onerror=\"alert(4)\">",
        );
        for bad in ["<script", "alert(1)", "<iframe", "javascript:", "onerror"] {
            assert!(!html.contains(bad), "{bad} survived: {html}");
        }
    }
}
