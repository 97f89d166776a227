/**
 * Markdown to safe HTML, loaded on demand (marked + DOMPurify stay out of the
 * first bundle). Two layers: marked escapes any raw HTML the model writes
 * (it is shown as text, never parsed), and DOMPurify then keeps only a short
 * list of tags and attributes, so even a parser bug cannot bring a script,
 * an event handler, a `javascript:` link or a remote image to the page.
 */
import { Marked, type Tokens } from "marked";
import DOMPurify from "dompurify";

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML, block or inline: shown as the text it is.
    html: ({ text }: Tokens.HTML | Tokens.Tag) => escapeHtml(text),
    // No remote images (they would track the reader, and CSP refuses them): a link instead.
    image: ({ href, text }: Tokens.Image) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
  },
});

const purify = DOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const ALLOWED_TAGS = [
  "p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
  "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "span",
];
const ALLOWED_ATTR = ["href", "title", "start", "align", "class", "target", "rel"];

// Set once: a config passed to each sanitize() call is parsed again every time
// (DOMPurify's _parseConfig), a cost paid on every streamed token.
purify.setConfig({
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
  RETURN_TRUSTED_TYPE: false,
});

export function renderMarkdown(source: string): string {
  const html = marked.parse(source) as string;
  return purify.sanitize(html);
}

/** Markdown touching most of marked's block and inline rules and DOMPurify's paths. */
const WARM_UP = [
  "# Title",
  "",
  "Some **bold**, _em_, ~~del~~, `code` and a [link](https://example.com) <b>raw</b>.",
  "Second line  ",
  "",
  "- one",
  "- two",
  "  1. nested",
  "",
  "> quoted",
  "",
  "```ts",
  "const x = 1;",
  "```",
  "",
  "| a | b |",
  "| --- | :-: |",
  "| 1 | 2 |",
  "",
  "Heading two",
  "---",
  "",
  "---",
  "![img](https://example.com/a.png) https://example.com &amp; done.",
].join("\n");

/**
 * Runs the renderer a few times on throwaway markdown. The first call on a
 * page compiles marked's regular expressions and lazily compiles both
 * libraries' functions: 15-25 ms on a busy two-core machine, measured in a
 * Chromium trace, which would otherwise land on the first streamed token of
 * the first answer (the render runs between the WebSocket frame and its paint).
 * Done once the chunk has loaded, at idle time (main.tsx), so nothing waits on it.
 */
export function warmUpMarkdown(): void {
  for (let i = 0; i < 3; i++) renderMarkdown(WARM_UP);
}
