import { createContext, useContext } from "react";
import type { RealtimeConnection } from "./realtime/connection";
import type { ChatStore } from "./features/chat/store";

export interface AppServices {
  realtime: RealtimeConnection;
  chat: ChatStore;
}

export const ServicesContext = createContext<AppServices | null>(null);

export function useServices(): AppServices {
  const s = useContext(ServicesContext);
  if (!s) throw new Error("useServices outside ServicesContext");
  return s;
}
