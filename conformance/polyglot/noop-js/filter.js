// Continues in both phases: the boundary's baseline cost for a JavaScript filter.

import { CONTINUE, Filter, exportFilter } from "./weft.js";

class Noop extends Filter {
  onRequest() {
    return CONTINUE;
  }

  onResponse() {
    return CONTINUE;
  }
}

export const hooks = exportFilter(Noop);
