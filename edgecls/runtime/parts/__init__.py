"""Part inspection: a trigger from the line makes a part, frames captured after it make one
verdict, and a part without a verdict inside its window gets the fail-safe one.

`config` holds the options, `triggers` the trigger kinds (a GPIO edge, an interval; MQTT, HTTP,
Modbus and OPC UA triggers arrive through their outputs' servers), `verdict` the rules that turn
a part's frames into one label, `ids` the part ids that stay unique across restarts, `station`
the queue, the deadlines and the order verdicts leave in.
"""

from edgecls.runtime.parts.config import PartsConfig, TriggerSpec
from edgecls.runtime.parts.station import Part, Station

__all__ = ["Part", "PartsConfig", "Station", "TriggerSpec"]
