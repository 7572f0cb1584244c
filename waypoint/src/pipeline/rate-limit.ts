// Filter 3, rate limiting: an empty slot in the documented order. Request authentication and rate
// limits (issue 15) go here, after authorization has said who may ask and before any fault, rewrite
// or upstream work is spent on a request that will be refused.
import type { Filter } from './context.js';

export const rateLimitFilter: Filter = {
  name: 'rate-limit',
  run(rc, next) {
    return next(rc);
  },
};
