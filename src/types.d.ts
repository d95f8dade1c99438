/** Embedded files: `import path from "x.o" with { type: "file" }` yields a path readable by Bun.file. */
declare module "*.o" {
  const path: string;
  export default path;
}
