// Public surface of traffic capture (node mode: nftables in the node's network namespace).
export type { CaptureErrorCode } from './errors.js';
export { CaptureError } from './errors.js';
export type { CaptureDesiredState, CaptureStatus, NodeCapture, NodeCaptureOptions } from './node-capture.js';
export { createNodeCapture } from './node-capture.js';
export type { CapturePorts, RulesetInput } from './ruleset.js';
export { DNS_RULES, EXPECTED_RULES, expectedRuleCount, renderMembership, renderRuleset } from './ruleset.js';
