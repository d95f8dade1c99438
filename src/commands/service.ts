import { defineCommand } from "citty";

/** `kpr service …`: the services programmed on this node. */
export default defineCommand({
  meta: { name: "service", description: "Inspect the services programmed on this node" },
  subCommands: {
    list: () => import("./service/list.ts").then((m) => m.default),
    get: () => import("./service/get.ts").then((m) => m.default),
  },
});
