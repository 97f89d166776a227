import { lazy, Suspense } from "react";
import { navigate, useRoute } from "./router";
import { ChatPage } from "./features/chat/ChatPage";

/** Its own chunk: most visits never open it. */
const StatusPage = lazy(() => import("./features/status/StatusPage"));

function NotFound() {
  return (
    <main className="not-found">
      <h1>Nothing here</h1>
      <p>
        <a
          href="/"
          onClick={(e) => {
            e.preventDefault();
            navigate("/");
          }}
        >
          Back to the chat
        </a>
      </p>
    </main>
  );
}

export function App() {
  const route = useRoute();
  switch (route.page) {
    case "chat":
      return <ChatPage conversationId={route.conversationId} />;
    case "status":
      return (
        <Suspense fallback={<p className="page-loading">Loading status…</p>}>
          <StatusPage />
        </Suspense>
      );
    case "not-found":
      return <NotFound />;
    default: {
      const unreachable: never = route;
      return unreachable;
    }
  }
}
