import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { ServicesContext, type AppServices } from "./context";
import { ChatStore } from "./features/chat/store";
import { loadMarkdown } from "./features/chat/Markdown";
import { installClientMetrics } from "./monitoring/clientMetrics";
import { RealtimeConnection } from "./realtime/connection";
import "./styles.css";

installClientMetrics();

const root = document.getElementById("root");
if (!root) throw new Error("index.html has no #root element");

// Built once per page, outside React: StrictMode's double effects must not open two sockets.
const realtime = new RealtimeConnection();
const services: AppServices = { realtime, chat: new ChatStore(realtime) };
void services.chat.init();

createRoot(root).render(
  <StrictMode>
    <ServicesContext.Provider value={services}>
      <App />
    </ServicesContext.Provider>
  </StrictMode>,
);

// The markdown renderer, once the first paint is done, so answers never wait for it.
const idle = window.requestIdleCallback ?? ((fn: () => void) => setTimeout(fn, 200));
idle(() => void loadMarkdown());
