/**
 * What the sources keep for kube-proxy's rules: node hints (hints.forNodes, read by kube-proxy's
 * endpointslicecache.go) and addresses with leading zeros (kept as written: translation reads them
 * as kube-proxy's legacy parser does).
 */
import { describe, expect, test } from "bun:test";
import { toEndpointSlice } from "../../src/k8s/api.ts";
import { manifestsFromText } from "../../src/k8s/manifest.ts";

const SLICE = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-a
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.244.001.010]
  nodeName: node-1
  hints:
    forZones: [{name: zone-a}]
    forNodes: [{name: node-1}]
`;

describe("hints.forNodes", () => {
  test("manifest source keeps hints.forNodes and an address with leading zeros as written", () => {
    const s = manifestsFromText(SLICE, "s.yaml");
    expect(s.endpointSlices[0]!.endpoints).toEqual([
      {
        addresses: ["10.244.001.010"],
        nodeName: "node-1",
        hints: { forZones: [{ name: "zone-a" }], forNodes: [{ name: "node-1" }] },
      },
    ]);
  });

  test("API source keeps hints.forNodes (and forZones) of an EndpointSlice", () => {
    const es = toEndpointSlice({
      metadata: { name: "web-a", namespace: "default", labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv4",
      endpoints: [
        { addresses: ["10.244.1.10"], hints: { forNodes: [{ name: "node-1" }] } },
        {
          addresses: ["10.244.1.11"],
          hints: { forZones: [{ name: "zone-a" }], forNodes: [{ name: "node-2" }] },
        },
      ],
    });
    expect(es.endpoints).toEqual([
      { addresses: ["10.244.1.10"], hints: { forNodes: [{ name: "node-1" }] } },
      {
        addresses: ["10.244.1.11"],
        hints: { forZones: [{ name: "zone-a" }], forNodes: [{ name: "node-2" }] },
      },
    ]);
  });
});
