from azure.data.tables import TableServiceClient


def test_azurite_answers_table_calls(azurite_connection_string: str) -> None:
    svc = TableServiceClient.from_connection_string(azurite_connection_string)
    table = svc.create_table_if_not_exists("fixturecheck")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "v": 1})
    assert table.get_entity("p", "r")["v"] == 1
