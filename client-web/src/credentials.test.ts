import { describe, expect, it } from "vitest";

import { tokenFromHash } from "./credentials";

describe("a token in the address", () => {
  it("is taken from the fragment, which keeps everything else", () => {
    expect(tokenFromHash("#token=ctxd_abc-_123")).toEqual({ token: "ctxd_abc-_123", rest: "" });
    expect(tokenFromHash("#a=1&token=eyJ.x.y&b=2")).toEqual({ token: "eyJ.x.y", rest: "#a=1&b=2" });
    expect(tokenFromHash("")).toEqual({ token: null, rest: "" });
    expect(tokenFromHash("#token=")).toEqual({ token: null, rest: "" });
    expect(tokenFromHash("#section")).toEqual({ token: null, rest: "#section" });
  });
});
