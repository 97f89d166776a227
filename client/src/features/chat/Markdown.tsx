import { memo, useEffect, useMemo, useState } from "react";

type Render = (source: string) => string;

let renderer: Render | null = null;
let loading: Promise<Render> | null = null;

/** Starts loading the markdown renderer (idle time after the first paint); resolves once it is there. */
export function loadMarkdown(): Promise<Render> {
  loading ??= import("./markdown").then((m) => {
    m.warmUpMarkdown();
    return (renderer = m.renderMarkdown);
  });
  return loading;
}

/**
 * An answer's markdown as sanitised HTML. Until the renderer has loaded,
 * the plain text (React escapes it), so the first token never waits for it.
 */
export const Markdown = memo(function Markdown({ text }: { text: string }) {
  const [render, setRender] = useState<Render | null>(() => renderer);
  useEffect(() => {
    if (render) return;
    let live = true;
    loadMarkdown().then(
      (r) => live && setRender(() => r),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [render]);
  const html = useMemo(() => (render ? render(text) : null), [render, text]);
  if (html === null) return <div className="md md-plain">{text}</div>;
  return <div className="md" dangerouslySetInnerHTML={{ __html: html }} />;
});
