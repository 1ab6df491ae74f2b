from app import first_tool, streamed_tool_call


def test_the_model_looks_up_the_population_first() -> None:
    assert first_tool("Can the country of Crumpet have dragons? Answer with only YES or NO") == \
        "lookup_population({'country': 'Crumpet'})"


def test_a_streamed_tool_call_arrives_whole() -> None:
    assert streamed_tool_call("What is 1231 * 2331?") == ("multiply", {"a": 1231, "b": 2331})
